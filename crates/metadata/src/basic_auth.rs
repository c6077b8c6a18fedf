//! The session token as basic auth: nested clients and the clients of the CLI's session proxy send
//! `Authorization: Basic base64(<token>:)`. The username is the token; a password, if any, is
//! ignored.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use subtle::ConstantTimeEq as _;

/// Whether `authorization` (the `Authorization` header's value, if the request has one) is
/// `Basic` (any case) credentials whose username is `token`, compared in constant time. An empty
/// `token` authorizes nothing.
pub fn basic_auth_matches(authorization: Option<&[u8]>, token: &str) -> bool {
    let Some(value) = authorization else {
        return false;
    };
    let Some(space) = value.iter().position(|b| *b == b' ') else {
        return false;
    };
    let (scheme, credentials) = (&value[..space], &value[space + 1..]);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return false;
    }
    let Ok(decoded) = STANDARD.decode(credentials.trim_ascii()) else {
        return false;
    };
    let user = decoded.split(|b| *b == b':').next().unwrap_or_default();
    !token.is_empty() && bool::from(user.ct_eq(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(credentials: &str) -> Vec<u8> {
        format!("Basic {}", STANDARD.encode(credentials)).into_bytes()
    }

    fn matches(value: &[u8]) -> bool {
        basic_auth_matches(Some(value), "tok")
    }

    #[test]
    fn the_token_as_username_authorizes() {
        assert!(matches(&header("tok:")));
        assert!(matches(&header("tok")));
        assert!(matches(&header("tok:any password")));
        assert!(matches(&header("tok:with:colons")));
        assert!(matches(
            format!("basic {}", STANDARD.encode("tok:")).as_bytes()
        ));
        assert!(matches(
            format!("BASIC  {} ", STANDARD.encode("tok:")).as_bytes()
        ));
    }

    #[test]
    fn a_wrong_token_does_not() {
        assert!(!matches(&header("tik:")));
        assert!(!matches(&header("to:")));
        assert!(!matches(&header("toke:")));
        assert!(!matches(&header(":tok")));
        assert!(!matches(&header("")));
        assert!(!basic_auth_matches(Some(&header(":")), ""));
    }

    #[test]
    fn malformed_headers_do_not() {
        assert!(!basic_auth_matches(None, "tok"));
        assert!(!matches(b""));
        assert!(!matches(b"Basic"));
        assert!(!matches(
            format!("Bearer {}", STANDARD.encode("tok:")).as_bytes()
        ));
        assert!(!matches(STANDARD.encode("tok:").as_bytes()));
        assert!(!matches(b"Basic not-base64!"));
        assert!(!matches(b"Basic dG9rOg"));
    }
}
