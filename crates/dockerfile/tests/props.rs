//! Property tests: whatever text a Dockerfile holds (random text, Dockerfile-shaped lines with
//! flags, heredocs, quotes, variables and continuations), parsing and translating answer with a
//! value or an error, never a panic. `PROPTEST_CASES` sets how many cases run.

use std::collections::BTreeMap;

use dagr_dockerfile::shell::{EnvList, Lex};
use dagr_dockerfile::{BaseImage, BuildOptions, images_needed, parse, translate};
use dagr_solver::{Op, Platform, Vertex};
use proptest::prelude::*;

fn options() -> BuildOptions {
    let context = Vertex::new(
        Op::Image {
            reference: "dagr.test/context".to_owned(),
            platform: Platform::default(),
        },
        Vec::new(),
    )
    .expect("vertex");
    BuildOptions {
        build_args: BTreeMap::from([("A".to_owned(), "x y".to_owned())]),
        target: None,
        target_platform: Platform::default(),
        build_platform: Platform::default(),
        secrets: BTreeMap::from([("s".to_owned(), "sha256:s".to_owned())]),
        context: (context, 0),
        dockerignore: vec!["*.log".to_owned()],
    }
}

/// Dockerfile-shaped text: instructions, flags, heredocs and shell syntax in any order.
fn dockerfile_like() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("\nFROM alpine".to_owned()),
        Just("\nFROM scratch AS s".to_owned()),
        Just("\nFROM s".to_owned()),
        Just("\nARG A=1".to_owned()),
        Just("\nENV".to_owned()),
        Just("\nRUN".to_owned()),
        Just("\nCOPY".to_owned()),
        Just("\nADD".to_owned()),
        Just("\nONBUILD".to_owned()),
        Just("\nHEALTHCHECK".to_owned()),
        Just("\nWORKDIR".to_owned()),
        Just("\nEXPOSE".to_owned()),
        Just("\n# escape=`".to_owned()),
        Just("--mount=type=cache,target=/c".to_owned()),
        Just("--mount=type=secret,id=s".to_owned()),
        Just("--from=s".to_owned()),
        Just("--from=0".to_owned()),
        Just("--chown=1:1".to_owned()),
        Just("--interval=1s".to_owned()),
        Just("<<EOF".to_owned()),
        Just("<<-'EOF'".to_owned()),
        Just("\nEOF".to_owned()),
        Just("\\\n".to_owned()),
        Just("[\"a\",".to_owned()),
        Just("]".to_owned()),
        Just("${A:-x}".to_owned()),
        Just("${A#*}".to_owned()),
        Just("${".to_owned()),
        Just("\"".to_owned()),
        Just("'".to_owned()),
        Just("/dst/".to_owned()),
        Just("CMD".to_owned()),
        Just("NONE".to_owned()),
        "[a-z0-9=./:-]{1,8}",
        ".{1,3}",
    ];
    proptest::collection::vec(token, 0..48).prop_map(|tokens| tokens.join(" "))
}

fn check(text: &str) {
    let Ok(df) = parse(text) else { return };
    let opts = options();
    let _ = images_needed(&df, &opts);
    let resolve = |req: &dagr_dockerfile::ImageRequest| {
        Some(BaseImage {
            pinned: format!("{}@sha256:{}", req.reference, "0".repeat(64)),
            config: serde_json::json!({"OnBuild": ["RUN x"]}),
        })
    };
    let _ = translate(&df, &opts, &resolve);
}

proptest! {
    #[test]
    fn any_text_parses_or_fails_cleanly(text in ".{0,400}") {
        check(&text);
    }

    #[test]
    fn dockerfile_like_text_translates_or_fails_cleanly(text in dockerfile_like()) {
        check(&text);
    }

    #[test]
    fn any_word_expands_or_fails_cleanly(word in ".{0,200}", escape in prop_oneof![Just('\\'), Just('`')]) {
        let env = EnvList::from_strings(["A=1", "B=x y"]);
        let lex = Lex::new(escape);
        let _ = lex.process_word(&word, &env);
        let _ = lex.process_words(&word, &env);
    }
}
