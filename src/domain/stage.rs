//! What a stage is given when it is created or changed: its name and its tags, checked once
//! where they enter, as IVS takes them.

use super::IdError;
use std::collections::BTreeMap;
use std::fmt;

/// A stage's name: 1–128 ASCII letters, digits, `-` and `_`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StageName(String);

impl StageName {
    pub const MAX_LEN: usize = 128;

    pub fn parse(raw: impl Into<String>) -> Result<Self, IdError> {
        let raw = raw.into();
        let ok = !raw.is_empty()
            && raw.len() <= Self::MAX_LEN
            && raw.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if ok {
            Ok(Self(raw))
        } else {
            Err(IdError::NotAStageName)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A stage's tags: at most 50 pairs, keys of 1–128 characters not starting with `aws:`, values
/// of up to 256 characters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageTags(BTreeMap<String, String>);

impl StageTags {
    pub const MAX_TAGS: usize = 50;
    /// The longest key and value, in characters.
    pub const MAX_KEY_LEN: usize = 128;
    pub const MAX_VALUE_LEN: usize = 256;

    pub fn parse(tags: BTreeMap<String, String>) -> Result<Self, IdError> {
        let ok = tags.len() <= Self::MAX_TAGS
            && tags.iter().all(|(k, v)| {
                !k.is_empty()
                    && k.chars().count() <= Self::MAX_KEY_LEN
                    && v.chars().count() <= Self::MAX_VALUE_LEN
                    && !k.starts_with("aws:")
            });
        if ok {
            Ok(Self(tags))
        } else {
            Err(IdError::NotStageTags)
        }
    }

    pub fn into_inner(self) -> BTreeMap<String, String> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_name_is_letters_digits_hyphens_and_underscores() {
        for good in ["a", "overflow-1", "news_master", &"x".repeat(128)] {
            assert_eq!(StageName::parse(good).unwrap().as_str(), good);
        }
        for bad in ["", "with space", "dot.ted", "é", &"x".repeat(129)] {
            assert_eq!(StageName::parse(bad), Err(IdError::NotAStageName), "{bad:?}");
        }
    }

    #[test]
    fn stage_tags_are_bounded_as_ivs_bounds_them() {
        let tags = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert!(StageTags::parse(tags(&[("team", "live"), ("k", "")])).is_ok());
        let fifty: BTreeMap<String, String> = (0..50).map(|n| (format!("k{n}"), "v".into())).collect();
        assert!(StageTags::parse(fifty.clone()).is_ok());
        let mut fifty_one = fifty;
        fifty_one.insert("one-more".into(), "v".into());
        for bad in [
            fifty_one,
            tags(&[("", "v")]),
            tags(&[("aws:reserved", "v")]),
            tags(&[(&"k".repeat(129), "v")]),
            tags(&[("k", &"v".repeat(257))]),
        ] {
            assert_eq!(StageTags::parse(bad), Err(IdError::NotStageTags));
        }
    }
}
