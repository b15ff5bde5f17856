"""Schemathesis hooks for .ci/fuzz: WHIP/WHEP offers (application/sdp) are sent as text."""
import schemathesis

schemathesis.serializer.alias("application/sdp", "text/plain")
