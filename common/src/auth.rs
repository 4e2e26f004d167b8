//! Shared-secret tokens: the agent join token and the client token for submitting runs.
//!
//! A token is read from a file (preferred: a mounted secret) or an environment variable,
//! travels as `authorization: Bearer <token>` on every RPC, and is compared in constant time.
//! It is never logged: [`Token`]'s `Debug` prints a placeholder.

use std::path::{Path, PathBuf};

use crate::input::InputError;

/// The shortest token accepted (a token from `openssl rand -hex 32` is 64 characters).
pub const MIN_TOKEN_LEN: usize = 16;
/// The longest token accepted.
pub const MAX_TOKEN_LEN: usize = 1024;

/// Why text is not a usable token. The message never contains the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Shorter than [`MIN_TOKEN_LEN`] or longer than [`MAX_TOKEN_LEN`].
    #[error("must be {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN} characters (it is {len})")]
    Length {
        /// The length found, in bytes.
        len: usize,
    },
    /// A space, a control character or a non-ASCII character.
    #[error("must be printable ASCII without spaces")]
    NotPrintable,
}

/// Why a token could not be loaded. The message names the file or variable, never the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenLoadError {
    /// The token file could not be read.
    #[error("{}: token file cannot be read: {source}", path.display())]
    Unreadable {
        /// The token file.
        path: PathBuf,
        /// Why.
        #[source]
        source: InputError,
    },
    /// The token file is not UTF-8.
    #[error("{}: token file is not UTF-8", path.display())]
    NotUtf8 {
        /// The token file.
        path: PathBuf,
        /// The decoding error.
        #[source]
        source: std::str::Utf8Error,
    },
    /// The token file holds no usable token.
    #[error("{}: token {source}", path.display())]
    InvalidInFile {
        /// The token file.
        path: PathBuf,
        /// What is wrong with the token.
        #[source]
        source: TokenError,
    },
    /// The environment variable holds no usable token.
    #[error("{var}: token {source}")]
    InvalidInEnv {
        /// The environment variable.
        var: String,
        /// What is wrong with the token.
        #[source]
        source: TokenError,
    },
}

/// A shared secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// Checks `text` (already trimmed) as a token; the error never contains the text.
    pub fn new(text: &str) -> Result<Self, TokenError> {
        if text.len() < MIN_TOKEN_LEN || text.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Length { len: text.len() });
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::NotPrintable);
        }
        Ok(Token(text.to_owned()))
    }

    /// The token from `file` if given, else from the environment variable `env` if set and
    /// not empty, else none. Errors name the file or variable, never the token.
    pub fn load(file: Option<&Path>, env: &str) -> Result<Option<Self>, TokenLoadError> {
        if let Some(path) = file {
            let bytes =
                crate::input::read_file(path).map_err(|source| TokenLoadError::Unreadable {
                    path: path.to_path_buf(),
                    source,
                })?;
            let text = std::str::from_utf8(&bytes).map_err(|source| TokenLoadError::NotUtf8 {
                path: path.to_path_buf(),
                source,
            })?;
            return Token::new(text.trim()).map(Some).map_err(|source| {
                TokenLoadError::InvalidInFile {
                    path: path.to_path_buf(),
                    source,
                }
            });
        }
        match std::env::var(env) {
            Ok(text) if !text.trim().is_empty() => {
                Token::new(text.trim())
                    .map(Some)
                    .map_err(|source| TokenLoadError::InvalidInEnv {
                        var: env.to_owned(),
                        source,
                    })
            }
            _ => Ok(None),
        }
    }

    /// The `authorization` header value carrying this token.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Whether `header` (an `authorization` value) carries this token. The comparison takes
    /// the same time wherever the first difference is.
    pub fn accepts(&self, header: Option<&[u8]>) -> bool {
        let Some(presented) = header.and_then(|h| h.strip_prefix(b"Bearer ")) else {
            return false;
        };
        let expected = self.0.as_bytes();
        let mut diff = u8::from(presented.len() != expected.len());
        for (i, &e) in expected.iter().enumerate() {
            diff |= e ^ presented.get(i).copied().unwrap_or(!e);
        }
        std::hint::black_box(diff) == 0
    }
}

/// Adds `authorization: Bearer <token>` to every request when a token is set (the agent's
/// join token, or a client's token for the run API).
#[derive(Debug, Clone)]
pub struct BearerToken(pub Option<Token>);

impl tonic::service::Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            let value = token
                .bearer()
                .parse()
                .map_err(|_| tonic::Status::internal("the token is not a valid header value"))?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_is_accepted() {
        let token = Token::new("0123456789abcdef").unwrap();
        assert!(token.accepts(Some(b"Bearer 0123456789abcdef")));
        for wrong in [
            &b"Bearer 0123456789abcdeF"[..],
            b"Bearer 0123456789abcde",
            b"Bearer 0123456789abcdef0",
            b"bearer 0123456789abcdef",
            b"0123456789abcdef",
            b"Bearer ",
        ] {
            assert!(
                !token.accepts(Some(wrong)),
                "{}",
                String::from_utf8_lossy(wrong)
            );
        }
        assert!(!token.accepts(None));
    }

    #[test]
    fn weak_tokens_are_refused_and_never_echoed() {
        let short = Token::new("hunter2").unwrap_err().to_string();
        assert_eq!(short, "must be 16 to 1024 characters (it is 7)");
        let spaced = Token::new("correct horse battery").unwrap_err().to_string();
        assert!(!spaced.contains("horse"), "{spaced}");
        assert_eq!(
            format!("{:?}", Token::new("0123456789abcdef").unwrap()),
            "Token(<redacted>)"
        );
    }

    #[test]
    fn a_token_file_is_trimmed_and_named_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.token");
        std::fs::write(&path, "0123456789abcdef\n").unwrap();
        let token = Token::load(Some(&path), "FLEETGATE_TEST_UNSET_TOKEN")
            .unwrap()
            .unwrap();
        assert!(token.accepts(Some(b"Bearer 0123456789abcdef")));
        std::fs::write(&path, "short\n").unwrap();
        assert_eq!(
            Token::load(Some(&path), "FLEETGATE_TEST_UNSET_TOKEN")
                .unwrap_err()
                .to_string(),
            format!(
                "{}: token must be 16 to 1024 characters (it is 5)",
                path.display()
            )
        );
        assert!(matches!(
            Token::load(None, "FLEETGATE_TEST_UNSET_TOKEN"),
            Ok(None)
        ));
    }
}
