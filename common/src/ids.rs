//! Identifiers of agents, runs and jobs, and the check that an id is safe to use as a file
//! name (agents name their outbox files after job ids; the coordinator accepts only safe
//! agent ids).
//!
//! The newtypes do not validate: an id received from a peer is kept as it came (bounded by
//! the limits of [`crate::convert`]) and compared by its text. Where an id must be safe,
//! [`is_safe_id`] says so.

use std::borrow::Borrow;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest safe id, in bytes: the longest id a peer may send.
pub const MAX_SAFE_ID_BYTES: usize = 128;

/// Whether a remote id is safe to use in a file name: 1 to [`MAX_SAFE_ID_BYTES`] bytes of
/// ASCII letters, digits, `-`, `_` or `.`, not starting with `.`.
pub fn is_safe_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_SAFE_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !id.starts_with('.')
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The id as it came, unchecked.
            pub fn new(id: impl Into<String>) -> Self {
                $name(id.into())
            }

            /// The id's text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id's text, owned.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                $name(id)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                $name(id.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

id_type!(
    /// An agent's id, unique in the fleet.
    AgentId
);
id_type!(
    /// A run's id, given by the coordinator that accepted it.
    RunId
);
id_type!(
    /// A job's id, given by the coordinator: one runtime (or one GPU of a per-GPU runtime) of
    /// a run on one agent.
    JobId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_ids_that_could_leave_the_state_directory_are_refused() {
        assert!(is_safe_id("run-1_job.3"));
        assert!(is_safe_id(&"a".repeat(MAX_SAFE_ID_BYTES)));
        assert!(!is_safe_id(&"a".repeat(MAX_SAFE_ID_BYTES + 1)));
        assert!(!is_safe_id("../etc"));
        assert!(!is_safe_id("a/b"));
        assert!(!is_safe_id(".hidden"));
        assert!(!is_safe_id(""));
    }

    #[test]
    fn ids_show_compare_and_serialize_as_their_text() {
        let id = AgentId::new("a1");
        assert_eq!(id.to_string(), "a1");
        assert_eq!(id.as_str(), "a1");
        assert_eq!(id, "a1");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"a1\"");
        assert_eq!(
            serde_json::from_str::<JobId>("\"j\"").unwrap(),
            JobId::new("j")
        );
        let map = std::collections::BTreeMap::from([(RunId::new("r1"), 1)]);
        assert_eq!(map.get("r1"), Some(&1));
    }
}
