//! ES384 JSON Web Tokens, signed with a P-384 key kept in the data dir.

use crate::domain::StageArn;
use crate::server::support::write_private_file;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use p384::ecdsa::signature::{Signer, Verifier};
use p384::ecdsa::{Signature, SigningKey, VerifyingKey};
use p384::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use p384::SecretKey;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("malformed token")]
    Malformed,
    #[error("unsupported token algorithm or key")]
    WrongKey,
    #[error("bad signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token lacks participant claims")]
    MissingClaims,
}

/// The claims of a participant token, as IVS defines self-signed ones: what the signer puts in
/// and what the media server reads back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantClaims {
    /// The stage the token admits to.
    pub resource: StageArn,
    /// The stage id (the ARN's last segment).
    pub topic: String,
    /// The participant id.
    pub jti: String,
    pub events_url: String,
    pub whip_url: String,
    #[serde(default)]
    pub capabilities: Capabilities,
    pub version: String,
    pub user_id: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Issued at, in seconds since the epoch.
    pub iat: i64,
    /// Expires at, in seconds since the epoch.
    pub exp: i64,
}

/// What a participant token allows; absent means nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Capabilities {
    #[serde(default)]
    pub allow_publish: bool,
    #[serde(default)]
    pub allow_subscribe: bool,
}

pub struct TokenSigner {
    signing: SigningKey,
    verifying: VerifyingKey,
    public_pem: String,
    fingerprint: String,
    kid: String,
}

impl TokenSigner {
    /// A fresh key pair (not stored).
    pub fn generate() -> Self {
        Self::from_secret(SecretKey::random(&mut rand::rngs::OsRng))
    }

    /// Loads the PKCS#8 PEM key at `path`, creating it (mode 0600) on first use.
    pub fn load_or_create(path: &Path) -> std::io::Result<Self> {
        if let Ok(pem) = std::fs::read_to_string(path) {
            let secret = SecretKey::from_pkcs8_pem(&pem)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?;
            return Ok(Self::from_secret(secret));
        }
        let secret = SecretKey::random(&mut rand::rngs::OsRng);
        let pem = secret.to_pkcs8_pem(LineEnding::LF).map_err(|e| std::io::Error::other(e.to_string()))?;
        write_private_file(path, pem.as_bytes())?;
        Ok(Self::from_secret(secret))
    }

    fn from_secret(secret: SecretKey) -> Self {
        let public_pem = secret.public_key().to_public_key_pem(LineEnding::LF).unwrap_or_default();
        let der = secret.public_key().to_public_key_der().map(|d| d.as_bytes().to_vec()).unwrap_or_default();
        let digest = Sha256::digest(&der);
        let fingerprint = digest.iter().take(8).map(|b| format!("{b:02x}")).collect::<String>();
        let kid = format!("local:{fingerprint}");
        let signing = SigningKey::from(secret);
        let verifying = *signing.verifying_key();
        Self { signing, verifying, public_pem, fingerprint, kid }
    }

    /// Uses `kid` as the key id (IVS wants the ARN ImportPublicKey returned).
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = kid.into();
        self
    }

    /// Writes the private key as a PKCS#8 PEM readable only by its owner (the file must not exist).
    pub fn write_pem(&self, path: &Path) -> std::io::Result<()> {
        let pem = self.signing.to_pkcs8_pem(LineEnding::LF).map_err(|e| std::io::Error::other(e.to_string()))?;
        write_private_file(path, pem.as_bytes())
    }

    /// First 8 bytes of the SHA-256 of the public key (DER), in hex.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The key id put in every token header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a SPKI PEM (what IVS's ImportPublicKey takes).
    pub fn public_key_pem(&self) -> &str {
        &self.public_pem
    }

    /// Signs `claims` (normally [`ParticipantClaims`]) as an ES384 JWT with this key's `kid`.
    pub fn sign(&self, claims: &impl Serialize) -> String {
        let header = json!({ "alg": "ES384", "typ": "JWT", "kid": self.kid });
        // Claims with string keys (a struct, a JSON object) always encode; were one not to, the
        // empty payload would fail every verification (fails closed).
        let payload = serde_json::to_string(claims).unwrap_or_default();
        let signing_input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(payload));
        let signature: Signature = self.signing.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", B64.encode(signature.to_bytes()))
    }

    /// Checks the signature and expiry; returns the participant's claims.
    /// Checks a token, cheapest checks first: its size and shape, its key and algorithm, and
    /// its expiry all come before the signature (a P-384 verification, about a millisecond),
    /// so a flood of junk or stale tokens costs little. Nothing of the claims is trusted
    /// until the signature holds.
    pub fn verify(&self, token: &str, now_secs: i64) -> Result<ParticipantClaims, JwtError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(JwtError::Malformed);
        };
        let header: Value =
            serde_json::from_slice(&B64.decode(h).map_err(|_| JwtError::Malformed)?).map_err(|_| JwtError::Malformed)?;
        if header["alg"] != "ES384" || header["kid"] != self.kid.as_str() {
            return Err(JwtError::WrongKey);
        }
        let sig_bytes = B64.decode(s).map_err(|_| JwtError::Malformed)?;
        let signature = Signature::from_slice(&sig_bytes).map_err(|_| JwtError::Malformed)?;
        let claims: Value =
            serde_json::from_slice(&B64.decode(p).map_err(|_| JwtError::Malformed)?).map_err(|_| JwtError::Malformed)?;
        match claims["exp"].as_i64() {
            Some(exp) if exp > now_secs => {}
            Some(_) => return Err(JwtError::Expired),
            None => return Err(JwtError::Malformed),
        }
        self.verifying.verify(format!("{h}.{p}").as_bytes(), &signature).map_err(|_| JwtError::BadSignature)?;
        serde_json::from_value(claims).map_err(|_| JwtError::MissingClaims)
    }
}

/// The largest token looked at: ours are well under 2 KiB.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::claims_unverified as decode_claims_unverified;

    #[test]
    fn signs_and_verifies() {
        let signer = TokenSigner::generate();
        let token = signer.sign(&claims(2_000));
        assert_eq!(token.split('.').count(), 3);
        let claims = signer.verify(&token, 1_000).unwrap();
        assert_eq!(claims.jti, "p1");
        assert_eq!(signer.verify(&token, 2_000), Err(JwtError::Expired));
    }

    fn claims(exp: i64) -> ParticipantClaims {
        ParticipantClaims {
            resource: StageArn::parse("arn:aws:ivs:us-east-1:123456789012:stage/AbCdEf123456").unwrap(),
            topic: "AbCdEf123456".into(),
            jti: "p1".into(),
            events_url: "ws://h/events".into(),
            whip_url: "http://h/whip".into(),
            capabilities: Capabilities { allow_publish: false, allow_subscribe: true },
            version: "1.0".into(),
            user_id: "v1".into(),
            attributes: BTreeMap::new(),
            iat: 1_000,
            exp,
        }
    }

    #[test]
    fn participant_claims_round_trip() {
        let signer = TokenSigner::generate();
        let token = signer.sign(&claims(2_000));
        assert_eq!(signer.verify(&token, 1_500), Ok(claims(2_000)));
        let raw = decode_claims_unverified(&token).unwrap();
        assert_eq!(raw["capabilities"], json!({ "allow_publish": false, "allow_subscribe": true }));
        assert_eq!(raw["resource"], "arn:aws:ivs:us-east-1:123456789012:stage/AbCdEf123456");
    }

    #[test]
    fn missing_capabilities_allow_nothing_but_a_bad_stage_is_no_participant() {
        let signer = TokenSigner::generate();
        let mut raw = serde_json::to_value(claims(2_000)).unwrap();
        raw.as_object_mut().unwrap().remove("capabilities");
        let token = signer.sign(&json!({ "jti": "p1", "exp": 2_000 }));
        assert_eq!(signer.verify(&token, 1_000), Err(JwtError::MissingClaims), "signed and current, but no participant");
        let verified = signer.verify(&signer.sign(&raw), 1_000).unwrap();
        assert_eq!(verified.capabilities, Capabilities::default());
        raw["resource"] = json!("stage/nope");
        assert_eq!(signer.verify(&signer.sign(&raw), 1_000), Err(JwtError::MissingClaims));
        raw.as_object_mut().unwrap().remove("resource");
        assert_eq!(signer.verify(&signer.sign(&raw), 1_000), Err(JwtError::MissingClaims));
    }

    #[test]
    fn rejects_tampering_and_foreign_keys() {
        let signer = TokenSigner::generate();
        let token = signer.sign(&json!({ "jti": "p1", "exp": 2_000 }));
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = B64.encode(json!({ "jti": "admin", "exp": 2_000 }).to_string());
        parts[1] = &forged;
        assert_eq!(signer.verify(&parts.join("."), 1_000), Err(JwtError::BadSignature));
        let other = TokenSigner::generate();
        assert_eq!(other.verify(&token, 1_000), Err(JwtError::WrongKey));
        assert_eq!(signer.verify("a.b", 1_000), Err(JwtError::Malformed));
    }

    #[test]
    fn key_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        let a = TokenSigner::load_or_create(&path).unwrap();
        let b = TokenSigner::load_or_create(&path).unwrap();
        assert_eq!(a.kid(), b.kid());
        let token = a.sign(&claims(10));
        assert!(b.verify(&token, 1).is_ok());
        assert!(a.public_key_pem().starts_with("-----BEGIN PUBLIC KEY-----"));
    }
}
