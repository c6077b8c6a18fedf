//! Property tests: the metadata header decoder takes any bytes a client sends without panicking,
//! and what it encodes it decodes back. `PROPTEST_CASES` sets how many cases run.

use dagr_metadata::{ClientMetadata, basic_auth_matches};
use proptest::prelude::*;

proptest! {
    #[test]
    fn any_header_value_decodes_or_is_refused(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = ClientMetadata::decode(&bytes);
    }

    #[test]
    fn base64_of_any_json_like_text_decodes_or_is_refused(text in ".{0,256}") {
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
        let _ = ClientMetadata::decode(encoded.as_bytes());
    }

    #[test]
    fn what_is_encoded_decodes_back(
        client_id in "[^\u{0}]{1,40}",
        token in "[^\u{0}]{1,40}",
        session_id in "[^\u{0}]{1,40}",
        hostname in ".{0,40}",
        labels in proptest::collection::btree_map(".{0,10}", ".{0,10}", 0..4),
    ) {
        let md = ClientMetadata {
            client_id,
            client_secret_token: token,
            session_id,
            client_hostname: hostname,
            client_version: "v0.11.8".into(),
            labels,
            ..Default::default()
        };
        prop_assert_eq!(ClientMetadata::decode(md.encode().as_bytes()), Ok(md));
    }

    #[test]
    fn basic_auth_of_any_header_is_checked_without_panicking(
        header in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..128)),
        token in ".{0,32}",
    ) {
        let _ = basic_auth_matches(header.as_deref(), &token);
    }
}
