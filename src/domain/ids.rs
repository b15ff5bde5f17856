//! Ids as types: stage ARNs, channel ids, user and participant ids, each checked once where
//! it enters and carried as its type from there on.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why an id was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {0} characters")]
    TooLong(usize),
    #[error("must not contain control characters")]
    ControlCharacter,
    #[error("must not contain invisible formatting characters (bidi controls, zero-width characters)")]
    FormatCharacter,
    #[error("is not a valid stage ARN")]
    NotAStageArn,
    #[error("must be lowercase letters, digits and inner hyphens (e.g. `my-channel`)")]
    NotAChannelId,
    #[error("must be 1-128 characters of letters, digits, '-' and '_'")]
    NotAStageName,
    #[error("must be at most 50 string pairs (keys 1-128, values up to 256 characters)")]
    NotStageTags,
}

fn check_text(raw: &str, max: usize) -> Result<(), IdError> {
    if raw.trim().is_empty() {
        return Err(IdError::Empty);
    }
    if raw.chars().count() > max {
        return Err(IdError::TooLong(max));
    }
    if raw.chars().any(char::is_control) {
        return Err(IdError::ControlCharacter);
    }
    Ok(())
}

/// `TryFrom<String>` through `parse`, `Into<String>` and `Display` for a `String` newtype.
macro_rules! text_conversions {
    ($name:ident) => {
        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(raw: String) -> Result<Self, IdError> {
                Self::parse(raw)
            }
        }
        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

/// Unicode's invisible formatting characters (general category Cf), as inclusive ranges: bidi
/// controls, zero-width characters and the like, which make two ids look the same or reorder
/// what is shown. Ids refuse them, and the OpenAPI document's id pattern is made from them.
pub const FORMAT_CHARS: &[(char, char)] = &[
    ('\u{00AD}', '\u{00AD}'),
    ('\u{0600}', '\u{0605}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{06DD}', '\u{06DD}'),
    ('\u{070F}', '\u{070F}'),
    ('\u{0890}', '\u{0891}'),
    ('\u{08E2}', '\u{08E2}'),
    ('\u{180E}', '\u{180E}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{202A}', '\u{202E}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFF9}', '\u{FFFB}'),
    ('\u{110BD}', '\u{110BD}'),
    ('\u{110CD}', '\u{110CD}'),
    ('\u{13430}', '\u{1343F}'),
    ('\u{1BCA0}', '\u{1BCA3}'),
    ('\u{1D173}', '\u{1D17A}'),
    ('\u{E0001}', '\u{E0001}'),
    ('\u{E0020}', '\u{E007F}'),
];

fn is_format_char(c: char) -> bool {
    !c.is_ascii() && FORMAT_CHARS.iter().any(|&(first, last)| (first..=last).contains(&c))
}

/// An id as text: checked like any text, free of formatting characters, and in Unicode's
/// composed form (NFC), so the same id typed two ways is one id.
fn id_text(raw: String, max: usize) -> Result<String, IdError> {
    use unicode_normalization::UnicodeNormalization;
    check_text(&raw, max)?;
    if raw.chars().any(is_format_char) {
        return Err(IdError::FormatCharacter);
    }
    if raw.is_ascii() {
        return Ok(raw);
    }
    let composed: String = raw.nfc().collect();
    check_text(&composed, max)?;
    Ok(composed)
}

macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const MAX_LEN: usize = $max;
            pub fn parse(raw: impl Into<String>) -> Result<Self, IdError> {
                Ok(Self(id_text(raw.into(), $max)?))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        text_conversions!($name);
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

text_id!(
    /// A viewer's or broadcaster's id as chosen by the client: 1-128 characters, no control or
    /// formatting characters, in NFC.
    UserId,
    128
);
text_id!(
    /// A participant id: 1-128 characters, no control or formatting characters, in NFC.
    ParticipantId,
    128
);

/// The ARN of an IVS Real-Time stage: `arn:<partition>:ivs:<region>:<account>:stage/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StageArn(String);

impl StageArn {
    pub const MAX_LEN: usize = 256;

    pub fn parse(raw: impl Into<String>) -> Result<Self, IdError> {
        let raw = raw.into();
        check_text(&raw, Self::MAX_LEN)?;
        let parts: Vec<&str> = raw.splitn(6, ':').collect();
        let ok = parts.len() == 6
            && parts[0] == "arn"
            && !parts[1].is_empty()
            && parts[2] == "ivs"
            && parts[5]
                .strip_prefix("stage/")
                .is_some_and(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        if ok {
            Ok(Self(raw))
        } else {
            Err(IdError::NotAStageArn)
        }
    }

    /// Builds the ARN of a stage from its parts.
    pub fn from_parts(region: &str, account: &str, stage_id: &str) -> Result<Self, IdError> {
        Self::parse(format!("arn:aws:ivs:{region}:{account}:stage/{stage_id}"))
    }

    /// The stage id: the last segment of the ARN.
    pub fn stage_id(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or_default()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

text_conversions!(StageArn);

/// A channel's name: the key under which a broadcaster goes live, with its own stages, stream
/// key, page and counts. A slug of 1-48 lowercase ASCII letters, digits and inner hyphens
/// (`news`, `room-2`). [`ChannelId::DEFAULT`] (also `Default`) always exists: every route
/// without a channel means it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ChannelId(String);

impl ChannelId {
    pub const MAX_LEN: usize = 48;
    /// The channel that always exists.
    pub const DEFAULT: &'static str = "default";

    pub fn parse(raw: impl Into<String>) -> Result<Self, IdError> {
        let raw = raw.into();
        check_text(&raw, Self::MAX_LEN)?;
        let slug = raw.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if slug && !raw.starts_with('-') && !raw.ends_with('-') {
            Ok(Self(raw))
        } else {
            Err(IdError::NotAChannelId)
        }
    }

    pub fn is_default(&self) -> bool {
        self.0 == Self::DEFAULT
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for ChannelId {
    fn default() -> Self {
        Self(Self::DEFAULT.to_string())
    }
}
text_conversions!(ChannelId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_id_accepts_ordinary_ids() {
        assert_eq!(UserId::parse("viewer-42").unwrap().as_str(), "viewer-42");
        assert!(UserId::parse("觀眾").is_ok());
        assert!(UserId::parse("x".repeat(128)).is_ok());
    }

    #[test]
    fn user_id_rejects_bad_input() {
        assert_eq!(UserId::parse(""), Err(IdError::Empty));
        assert_eq!(UserId::parse("   "), Err(IdError::Empty));
        assert_eq!(UserId::parse("x".repeat(129)), Err(IdError::TooLong(128)));
        assert_eq!(UserId::parse("a\nb"), Err(IdError::ControlCharacter));
        assert_eq!(UserId::parse("a\u{0}b"), Err(IdError::ControlCharacter));
        for invisible in ["a\u{202E}b", "a\u{200B}b", "a\u{2066}b", "\u{FEFF}a", "a\u{00AD}b"] {
            assert_eq!(UserId::parse(invisible), Err(IdError::FormatCharacter), "{invisible:?}");
        }
    }

    #[test]
    fn a_user_id_typed_two_ways_is_one_id() {
        let composed = UserId::parse("caf\u{e9}").unwrap();
        let decomposed = UserId::parse("cafe\u{301}").unwrap();
        assert_eq!(composed, decomposed);
        assert_eq!(decomposed.as_str(), "caf\u{e9}");
    }

    #[test]
    fn stage_arn_parses_real_shapes() {
        let arn = StageArn::parse("arn:aws:ivs:us-east-1:123456789012:stage/AbCdEf123456").unwrap();
        assert_eq!(arn.stage_id(), "AbCdEf123456");
        let built = StageArn::from_parts("us-east-1", "123456789012", "AbCdEf123456").unwrap();
        assert_eq!(arn, built);
    }

    #[test]
    fn stage_arn_rejects_other_strings() {
        for bad in [
            "",
            "stage/abc",
            "arn:aws:ivs:us-east-1:1:channel/abc",
            "arn:aws:s3:us-east-1:1:stage/abc",
            "arn:aws:ivs:us-east-1:1:stage/",
            "arn:aws:ivs:us-east-1:1:stage/a b",
            "arn:aws:ivs:us-east-1:1:stage/a/b",
        ] {
            assert!(StageArn::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn ids_deserialize_through_their_parsers() {
        let ok: Result<UserId, _> = serde_json::from_str("\"u1\"");
        assert!(ok.is_ok());
        let bad: Result<UserId, _> = serde_json::from_str("\"\"");
        assert!(bad.is_err());
    }

    #[test]
    fn channel_id_defaults_to_the_channel_that_always_exists() {
        assert_eq!(ChannelId::default().as_str(), ChannelId::DEFAULT);
        assert_eq!(ChannelId::parse(ChannelId::DEFAULT), Ok(ChannelId::default()));
    }

    #[test]
    fn channel_id_rejects_blank_long_and_control_text() {
        assert_eq!(ChannelId::parse("  "), Err(IdError::Empty));
        assert_eq!(ChannelId::parse("a\nb"), Err(IdError::ControlCharacter));
        let bad: Result<ChannelId, _> = serde_json::from_str("\"a b\"");
        assert!(bad.is_err());
    }

    #[test]
    fn channel_id_is_a_slug() {
        for ok in ["default", "news", "room-2", "a", "9", "a-b-c", &"x".repeat(48)] {
            assert_eq!(ChannelId::parse(ok).unwrap().as_str(), ok);
        }
        for bad in ["News", "room_2", "-a", "a-", "-", "a b", "é", "a/b", "a.b"] {
            assert_eq!(ChannelId::parse(bad), Err(IdError::NotAChannelId), "{bad}");
        }
        assert_eq!(ChannelId::parse(""), Err(IdError::Empty));
        assert_eq!(ChannelId::parse("x".repeat(49)), Err(IdError::TooLong(48)));
        assert!(ChannelId::default().is_default());
        assert!(!ChannelId::parse("news").unwrap().is_default());
    }
}
