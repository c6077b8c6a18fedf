//! Modules end to end: `dagr init`, `dagr functions`, `dagr call` and `dagr install` with the
//! official Python SDK (`dagger-io` 0.11.8) as the module runtime, offline.
//!
//! The runtime's base image is Debian's Python from this host (`dagr_testkit::pyimage`) plus
//! the wheelhouse of the SDK and its dependencies at `/wheels`, published once per test process
//! to the loopback registry by dagr itself. Engines run with `--python-find-links /wheels` and
//! the image sets `PIP_NO_INDEX=1`, so pip never reaches for the internet. Modules are written by
//! the tests into temp directories: `dagr init --sdk=python`, then `src/main/__init__.py`
//! replaced and `[tool.dagger] base-image` set.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use common::{dagr, engine_bin};
use dagr_testkit::EngineProcess;
use serde_json::json;

/// The base image of the tests' modules: Python with the wheelhouse at `/wheels`.
fn base_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let engine = EngineProcess::start(&engine_bin(), &[]);
        dagr_testkit::pyimage::module_base_image(env!("CARGO_TARGET_TMPDIR"), &engine)
    })
}

/// `code` after `IMAGE = "<the loopback busybox image>"`.
fn with_image(code: &str) -> String {
    let image = &dagr_testkit::registry(env!("CARGO_TARGET_TMPDIR")).image;
    format!("IMAGE = {image:?}\n{code}")
}

/// An engine for module tests.
fn engine() -> EngineProcess {
    base_image();
    EngineProcess::start(&engine_bin(), &["--python-find-links", "/wheels"])
}

fn text(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `dagr ARGS` against `engine` in `dir`.
fn dagr_in(engine: &EngineProcess, dir: &Path, args: &[&str]) -> Output {
    Command::new(dagr())
        .args(["--host", &engine.host(), "--progress", "quiet"])
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("dagr")
}

/// `dagr ARGS` that must succeed: its stdout.
fn ok(engine: &EngineProcess, dir: &Path, args: &[&str]) -> String {
    let out = dagr_in(engine, dir, args);
    assert!(out.status.success(), "dagr {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `dagr ARGS` that must fail: its stderr.
fn fails(engine: &EngineProcess, dir: &Path, args: &[&str]) -> String {
    let out = dagr_in(engine, dir, args);
    assert!(
        !out.status.success(),
        "dagr {args:?} should fail: {}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `dagr init --sdk=python --name NAME DIR`, then `code` as the module's code and the tests'
/// base image.
fn module(engine: &EngineProcess, parent: &Path, name: &str, code: &str) -> std::path::PathBuf {
    let dir = parent.join(name);
    ok(
        engine,
        parent,
        &["init", "--sdk=python", "--name", name, name],
    );
    assert!(dir.join("dagger.json").is_file());
    assert!(dir.join("src/main/__init__.py").is_file());
    std::fs::write(dir.join("src/main/__init__.py"), code).expect("write code");
    let pyproject = dir.join("pyproject.toml");
    let mut toml = std::fs::read_to_string(&pyproject).expect("pyproject.toml");
    toml.push_str(&format!(
        "\n[tool.dagger]\nbase-image = \"{}\"\n",
        base_image()
    ));
    std::fs::write(&pyproject, toml).expect("write pyproject.toml");
    dir
}

const HELLO: &str = r#"
import dagger
from dagger import dag, function, object_type


@object_type
class Hello:
    @function
    def hello(self, name: str = "world") -> str:
        """Says hello"""
        return f"hello, {name}!"

    @function
    def add(self, a: int, b: int = 2, negate: bool = False) -> int:
        """Adds two numbers"""
        return -(a + b) if negate else a + b

    @function
    def join(self, words: list[str], sep: str = "-") -> str:
        return sep.join(words)

    @function
    def echo(self, greeting: str) -> dagger.Container:
        """A container that echoes"""
        return dag.container().from_(IMAGE).with_exec(["echo", greeting])

    @function
    async def count_files(self, dir: dagger.Directory) -> int:
        return len(await dir.entries())

    @function
    async def reveal(self, secret: dagger.Secret) -> str:
        return (await secret.plaintext())[::-1]

    @function
    def fail(self, why: str) -> str:
        print("about to fail")
        raise ValueError(f"failing because {why}")

    @function
    def nonce(self) -> str:
        import random
        return str(random.random())

    @function
    async def own_files(self) -> list[str]:
        """The module's own source files, and a file of its working directory"""
        names = await dag.current_module().source().entries()
        project = await dag.current_module().workdir_file("pyproject.toml").contents()
        return sorted(names) + [project.splitlines()[0]]

    @function
    def proto(self, p: dagger.NetworkProtocol = dagger.NetworkProtocol.TCP) -> str:
        return p.value

    @function
    def stamp(self, dir: dagger.Directory) -> dagger.Directory:
        """The directory with one more file"""
        return dir.with_new_file("stamped", "by hello")

    @function
    async def run_in(self, ctr: dagger.Container) -> str:
        return await ctr.with_exec(["echo", "ran in the given container"]).stdout()

    @function
    async def ask(self, svc: dagger.Service) -> str:
        return await (
            dag.container()
            .from_(IMAGE)
            .with_service_binding("srv", svc)
            .with_exec(["sh", "-c", "echo ping | nc -w 5 srv 7901"])
            .stdout()
        )
"#;

#[test]
fn init_call_functions_and_arguments() {
    let engine = engine();
    let tmp = tempfile::tempdir().expect("tmp");
    let image = dagr_testkit::registry(env!("CARGO_TARGET_TMPDIR"))
        .image
        .clone();
    let code = with_image(HELLO);
    let dir = module(&engine, tmp.path(), "hello", &code);

    // A string, with the default and with an argument.
    assert_eq!(ok(&engine, &dir, &["call", "hello"]), "hello, world!\n");
    assert_eq!(
        ok(&engine, &dir, &["call", "hello", "--name", "dagr"]),
        "hello, dagr!\n"
    );
    assert_eq!(
        ok(&engine, &dir, &["call", "hello", "--name=you"]),
        "hello, you!\n"
    );
    // From elsewhere, with -m.
    assert_eq!(
        ok(&engine, tmp.path(), &["call", "-m", "hello", "hello"]),
        "hello, world!\n"
    );
    // Ints, defaults, booleans, lists.
    assert_eq!(ok(&engine, &dir, &["call", "add", "--a", "40"]), "42\n");
    assert_eq!(
        ok(
            &engine,
            &dir,
            &["call", "add", "--a", "1", "--b", "1", "--negate"]
        ),
        "-2\n"
    );
    assert_eq!(
        ok(&engine, &dir, &["call", "join", "--words", "a,b,c"]),
        "a-b-c\n"
    );
    assert_eq!(
        ok(
            &engine,
            &dir,
            &["call", "join", "--words", "x", "--words", "y", "--sep", "+"]
        ),
        "x+y\n"
    );
    // currentModule: the module's source and its working directory.
    assert_eq!(
        ok(&engine, &dir, &["call", "own-files"]),
        "dagger.json\npyproject.toml\nsrc\n[project]\n"
    );
    // An enum, by its value's name.
    assert_eq!(ok(&engine, &dir, &["call", "proto"]), "TCP\n");
    assert_eq!(ok(&engine, &dir, &["call", "proto", "--p", "UDP"]), "UDP\n");
    let err = fails(&engine, &dir, &["call", "proto", "--p", "SCTP"]);
    assert!(err.contains("SCTP"), "{err}");
    // A Directory from a host path, a Secret from the environment.
    std::fs::create_dir_all(dir.join("data")).expect("data dir");
    for f in ["a", "b", "c"] {
        std::fs::write(dir.join("data").join(f), f).expect("data file");
    }
    assert_eq!(
        ok(&engine, &dir, &["call", "count-files", "--dir", "data"]),
        "3\n"
    );
    let out = Command::new(dagr())
        .args([
            "--host",
            &engine.host(),
            "--progress",
            "quiet",
            "call",
            "reveal",
            "--secret",
            "env:MY_SECRET",
        ])
        .env("MY_SECRET", "terces")
        .current_dir(&dir)
        .output()
        .expect("dagr");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "secret\n");
    // A Container result, chained into core functions.
    assert_eq!(
        ok(
            &engine,
            &dir,
            &["call", "echo", "--greeting", "hi there", "stdout"]
        ),
        "hi there\n"
    );
    let out = dagr_in(&engine, &dir, &["call", "echo", "--greeting", "x"]);
    assert!(out.status.success(), "{}", text(&out));

    // A Container from an image address, a Directory result exported with -o.
    assert_eq!(
        ok(&engine, &dir, &["call", "run-in", "--ctr", &image]),
        "ran in the given container\n"
    );
    ok(
        &engine,
        &dir,
        &["call", "-o", "out", "stamp", "--dir", "data"],
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("out/stamped")).expect("exported"),
        "by hello"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("out/a")).expect("exported"),
        "a"
    );
    // A Service from tcp://HOST:PORT: a server on this machine, reached through the CLI.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            // One thread per connection: the service's health check connects too.
            std::thread::spawn(move || {
                use std::io::{BufRead as _, Write as _};
                let mut line = String::new();
                let mut reader = std::io::BufReader::new(&stream);
                let _ = reader.read_line(&mut line);
                let _ = (&stream).write_all(format!("pong to {}", line.trim()).as_bytes());
            });
        }
    });
    let svc = format!("tcp://127.0.0.1:{port}");
    let code = HELLO.replace("nc -w 5 srv 7901", &format!("nc -w 5 srv {port}"));
    std::fs::write(dir.join("src/main/__init__.py"), with_image(&code)).expect("code");
    assert_eq!(
        ok(&engine, &dir, &["call", "ask", "--svc", &svc]),
        "pong to ping\n"
    );

    // dagr functions lists them, kebab-case, with their descriptions.
    let functions = ok(&engine, &dir, &["functions"]);
    for line in [
        "hello ",
        "add ",
        "count-files",
        "echo ",
        "Says hello",
        "Adds two numbers",
    ] {
        assert!(
            functions.contains(line),
            "{line:?} missing from:\n{functions}"
        );
    }
    // --help of a function: its arguments, types, defaults, descriptions.
    let help = ok(&engine, &dir, &["call", "add", "--help"]);
    assert!(help.contains("Adds two numbers"), "{help}");
    assert!(
        help.contains("--a") && help.contains("(required)"),
        "{help}"
    );
    assert!(
        help.contains("--b") && help.contains("(default: 2)"),
        "{help}"
    );
    assert!(
        help.contains("--negate") && help.contains("Boolean"),
        "{help}"
    );

    // Bad input on the command line.
    let err = fails(&engine, &dir, &["call", "add", "--a", "forty"]);
    assert!(
        err.contains("--a") && err.contains("\"forty\" is not an integer"),
        "{err}"
    );
    let err = fails(&engine, &dir, &["call", "add"]);
    assert!(err.contains("missing required argument --a"), "{err}");
    let err = fails(&engine, &dir, &["call", "add", "--c", "1"]);
    assert!(err.contains("no argument --c"), "{err}");
    let err = fails(&engine, &dir, &["call", "nope"]);
    assert!(err.contains("no function \"nope\""), "{err}");

    // An error inside a function: its message, the function's name and its output.
    let err = fails(&engine, &dir, &["call", "fail", "--why", "tests"]);
    assert!(err.contains("call function \"fail\""), "{err}");
    assert!(err.contains("failing because tests"), "{err}");
    assert!(err.contains("about to fail"), "{err}");

    // The second identical call runs nothing: the cached result comes back.
    let first = ok(&engine, &dir, &["call", "nonce"]);
    let second = ok(&engine, &dir, &["call", "nonce"]);
    assert_eq!(first, second);
}

const GREETER: &str = r#"
import dagger
from dagger import dag, field, function, object_type


@object_type
class Card:
    """A greeting card"""

    text: str = field()
    length: int = field()


@object_type
class Greeter:
    greeting: str = field(default="hello")

    @function
    def with_greeting(self, greeting: str) -> "Greeter":
        """Changes the greeting"""
        self.greeting = greeting
        return self

    @function
    def greet(self, name: str) -> str:
        return f"{self.greeting}, {name}!"

    @function
    def card(self, name: str) -> Card:
        text = self.greet(name)
        return Card(text=text, length=len(text))

    @function
    async def shout(self, name: str) -> str:
        """Greets loudly, from a container"""
        return await (
            dag.container()
            .from_(IMAGE)
            .with_exec(["sh", "-c", f"echo {self.greeting} {name} | tr a-z A-Z"])
            .stdout()
        )
"#;

const APP: &str = r#"
import dagger
from dagger import dag, function, object_type


@object_type
class App:
    @function
    async def relay(self, name: str) -> str:
        """Asks the greeter module to shout"""
        return await dag.greeter().with_greeting("yo").shout(name)

    @function
    async def card_text(self, name: str) -> str:
        return await dag.greeter().card(name).text()
"#;

#[test]
fn objects_chains_and_dependencies() {
    let engine = engine();
    let tmp = tempfile::tempdir().expect("tmp");
    let greeter = module(&engine, tmp.path(), "greeter", &with_image(GREETER));

    // An object's state through chained calls, constructor arguments, fields.
    assert_eq!(
        ok(&engine, &greeter, &["call", "greet", "--name", "bob"]),
        "hello, bob!\n"
    );
    assert_eq!(
        ok(
            &engine,
            &greeter,
            &[
                "call",
                "with-greeting",
                "--greeting",
                "hey",
                "greet",
                "--name",
                "bob"
            ]
        ),
        "hey, bob!\n"
    );
    assert_eq!(
        ok(
            &engine,
            &greeter,
            &["call", "--greeting", "hi", "greet", "--name", "x"]
        ),
        "hi, x!\n"
    );
    assert_eq!(
        ok(
            &engine,
            &greeter,
            &["call", "card", "--name", "al", "length"]
        ),
        "10\n"
    );
    let card = ok(&engine, &greeter, &["call", "card", "--name", "al"]);
    assert!(
        card.contains("text: hello, al!") && card.contains("length: 10"),
        "{card}"
    );
    let functions = ok(&engine, &greeter, &["functions", "card"]);
    assert!(
        functions.contains("text") && functions.contains("length"),
        "{functions}"
    );

    // A module depending on it: CLI -> app -> greeter -> exec.
    let app = module(&engine, tmp.path(), "app", APP);
    ok(&engine, &app, &["install", "../greeter"]);
    let config = std::fs::read_to_string(app.join("dagger.json")).expect("dagger.json");
    assert!(config.contains("\"source\": \"../greeter\""), "{config}");
    // The dependency's client code, for editors (the runtime generates the same).
    let bindings = std::fs::read_to_string(app.join("sdk/dagr_deps.py")).expect("sdk/dagr_deps.py");
    assert!(bindings.contains("class Greeter(Type):"), "{bindings}");
    assert!(
        bindings.contains("async def greet(self, name):"),
        "{bindings}"
    );
    // develop regenerates them.
    std::fs::remove_file(app.join("sdk/dagr_deps.py")).expect("rm");
    ok(&engine, &app, &["develop"]);
    assert!(app.join("sdk/dagr_deps.py").is_file());
    assert_eq!(
        ok(&engine, &app, &["call", "relay", "--name", "bob"]),
        "YO BOB\n"
    );
    assert_eq!(
        ok(&engine, &app, &["call", "card-text", "--name", "al"]),
        "hello, al!\n"
    );
    // The app's client sees its own module only; the dependency is the app's business.
    let functions = ok(&engine, &app, &["functions"]);
    assert!(
        functions.contains("relay") && !functions.contains("greet "),
        "{functions}"
    );

    // A cycle between modules is refused, by install and, with a hand-edited dagger.json, by
    // calls.
    let before = std::fs::read_to_string(greeter.join("dagger.json")).expect("dagger.json");
    let err = fails(&engine, &greeter, &["install", "../app"]);
    assert!(
        err.contains("dependency cycle") && err.contains("left unchanged"),
        "{err}"
    );
    let after = std::fs::read_to_string(greeter.join("dagger.json")).expect("dagger.json");
    assert_eq!(after, before);
    let cyclic = before.replace(
        "\"sdk\": \"python\"",
        "\"sdk\": \"python\",\n  \"dependencies\": [{\"name\": \"app\", \"source\": \"../app\"}]",
    );
    assert_ne!(cyclic, before);
    std::fs::write(greeter.join("dagger.json"), cyclic).expect("dagger.json");
    let err = fails(&engine, &app, &["call", "relay", "--name", "x"]);
    assert!(err.contains("dependency cycle"), "{err}");
}

#[test]
fn bad_modules_get_clear_errors() {
    let engine = engine();
    let tmp = tempfile::tempdir().expect("tmp");
    let write = |name: &str, config: &str| {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("dagger.json"), config).expect("dagger.json");
        dir
    };
    let dir = write(
        "colour",
        r#"{"name": "colour", "sdk": "python", "colour": "red"}"#,
    );
    let err = fails(&engine, &dir, &["functions"]);
    assert!(
        err.contains("dagger.json") && err.contains("unknown field `colour`"),
        "{err}"
    );
    let dir = write("nosdk", r#"{"name": "nosdk"}"#);
    let err = fails(&engine, &dir, &["call", "x"]);
    assert!(
        err.contains("dagger.json: field \"sdk\" is missing"),
        "{err}"
    );
    let dir = write("cobol", r#"{"name": "cobol", "sdk": "cobol"}"#);
    let err = fails(&engine, &dir, &["functions"]);
    assert!(
        err.contains("\"cobol\" is not supported (dagr supports: python)"),
        "{err}"
    );
    let err = fails(
        &engine,
        tmp.path(),
        &["init", "--sdk=cobol", "--name", "c", "newmod"],
    );
    assert!(err.contains("\"cobol\" is not supported"), "{err}");
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).expect("dir");
    let err = fails(&engine, &empty, &["call", "-m", ".", "x"]);
    assert!(err.contains("no dagger.json there"), "{err}");
    let help = ok(&engine, &empty, &["call", "--help"]);
    assert!(
        help.contains("Usage:") && help.contains("no module here"),
        "{help}"
    );

    // A module whose code fails to load: the registration's traceback reaches the user.
    let broken = module(
        &engine,
        tmp.path(),
        "broken",
        "import dagger\nraise RuntimeError(\"broken at import\")\n",
    );
    let err = fails(&engine, &broken, &["functions"]);
    assert!(err.contains("registering module broken"), "{err}");
    assert!(
        err.contains("broken at import") && err.contains("Traceback"),
        "{err}"
    );
}

#[test]
fn clients_of_one_session_see_their_own_modules() {
    let engine = engine();
    let tmp = tempfile::tempdir().expect("tmp");
    let hello = module(&engine, tmp.path(), "hello", &with_image(HELLO));
    let greeter = module(&engine, tmp.path(), "greeter", &with_image(GREETER));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let a = dagr_testkit::gql::connect(&engine, false).await;
        let mut options = dagr_testkit::connect_options(&engine.host(), tmp.path());
        options.session_id = Some(a.metadata().session_id.clone());
        let b = dagr_client::connect(options).await.expect("second client");
        assert_eq!(a.metadata().session_id, b.metadata().session_id);
        assert_ne!(a.metadata().client_id, b.metadata().client_id);
        let serve = |dir: &Path| {
            format!(
                "{{ moduleSource(refString: {}) {{ asModule {{ initialize {{ serve }} }} }} }}",
                json!(dir.display().to_string())
            )
        };
        dagr_testkit::gql::query(&a, serve(&hello))
            .await
            .expect("a serves hello");
        dagr_testkit::gql::query(&b, serve(&greeter))
            .await
            .expect("b serves greeter");
        let entry_points = |data: serde_json::Value| -> Vec<String> {
            data["__type"]["fields"]
                .as_array()
                .expect("fields")
                .iter()
                .filter_map(|f| f["name"].as_str().map(str::to_owned))
                .collect()
        };
        let query_fields = r#"{ __type(name: "Query") { fields { name } } }"#.to_owned();
        let of_a = entry_points(
            dagr_testkit::gql::query(&a, query_fields.clone())
                .await
                .expect("a"),
        );
        let of_b = entry_points(dagr_testkit::gql::query(&b, query_fields).await.expect("b"));
        assert!(of_a.contains(&"hello".to_owned()) && !of_a.contains(&"greeter".to_owned()));
        assert!(of_b.contains(&"greeter".to_owned()) && !of_b.contains(&"hello".to_owned()));
        // A module from a directory (Directory.asModule).
        let by_dir = dagr_testkit::gql::query(
            &a,
            format!(
                "{{ host {{ directory(path: {}) {{ asModule {{ initialize {{ name sdk }} }} }} }} }}",
                json!(hello.display().to_string())
            ),
        )
        .await
        .expect("Directory.asModule");
        assert_eq!(
            by_dir["host"]["directory"]["asModule"]["initialize"],
            json!({ "name": "hello", "sdk": "python" })
        );
        let answer = dagr_testkit::gql::query(&a, r#"{ hello { hello(name: "a") } }"#.into())
            .await
            .expect("a calls hello");
        assert_eq!(answer["hello"]["hello"], "hello, a!");
        let err = dagr_testkit::gql::query(&b, r#"{ hello { hello } }"#.into())
            .await
            .expect_err("b has no hello");
        assert!(err.contains("hello"), "{err}");
        // An ID of a's host is usable by b (as by a function a calls), but only as a made it:
        // b cannot forge one that reads another path of a's host.
        std::fs::create_dir_all(tmp.path().join("shared")).expect("dir");
        std::fs::write(tmp.path().join("shared/f"), "shared").expect("file");
        std::fs::write(tmp.path().join("private"), "private").expect("file");
        let made = dagr_testkit::gql::query(
            &a,
            format!(
                "{{ host {{ directory(path: {}) {{ id }} }} }}",
                json!(tmp.path().join("shared").display().to_string())
            ),
        )
        .await
        .expect("a's directory");
        let id = made["host"]["directory"]["id"].as_str().expect("id").to_owned();
        let read = |id: String| {
            let b = &b;
            async move {
                let answer = b
                    .query(json!({
                        "query": "query($id: DirectoryID!) { loadDirectoryFromID(id: $id) { entries } }",
                        "variables": { "id": id },
                    }))
                    .await
                    .expect("query sent");
                match answer.get("errors") {
                    Some(errors) => Err(errors.to_string()),
                    None => Ok(answer["data"]["loadDirectoryFromID"]["entries"].clone()),
                }
            }
        };
        assert_eq!(read(id.clone()).await.expect("b reads a's ID"), json!(["f"]));
        use base64::Engine as _;
        let engine64 = base64::engine::general_purpose::STANDARD;
        let text = String::from_utf8(engine64.decode(&id).expect("base64")).expect("utf-8");
        let forged_text = text.replace(
            &tmp.path().join("shared").display().to_string(),
            &tmp.path().display().to_string(),
        );
        assert_ne!(forged_text, text);
        let err = read(engine64.encode(forged_text)).await.expect_err("forged ID");
        assert!(err.contains("never used it"), "{err}");
        b.close().await.expect("close b");
        a.close().await.expect("close a");
    });
}

#[test]
fn git_modules_are_called_and_depended_on() {
    let engine = engine();
    let tmp = tempfile::tempdir().expect("tmp");
    // A greeter module, made with init, then pushed into a repository under `mods/greeter`
    // next to a module it depends on inside the same repository (`../util`).
    let greeter = module(&engine, tmp.path(), "greeter", &with_image(GREETER));
    let util = module(
        &engine,
        tmp.path(),
        "util",
        "from dagger import function, object_type\n\n\n@object_type\nclass Util:\n    @function\n    def upper(self, s: str) -> str:\n        return s.upper()\n",
    );
    let server = dagr_testkit::git::GitServer::start(None);
    server.create("mods.git");
    let mut files = Vec::new();
    for (dir, prefix) in [(&greeter, "mods/greeter"), (&util, "mods/util")] {
        for entry in ["dagger.json", "pyproject.toml", "src/main/__init__.py"] {
            let text = std::fs::read_to_string(dir.join(entry)).expect("module file");
            files.push((format!("{prefix}/{entry}"), text));
        }
    }
    // The greeter depends on util, by a path inside the repository.
    for (path, text) in files.iter_mut() {
        if path == "mods/greeter/dagger.json" {
            *text = text.replace(
                "\"sdk\": \"python\"",
                "\"sdk\": \"python\",\n  \"dependencies\": [{\"name\": \"util\", \"source\": \"../util\"}]",
            );
        }
        if path == "mods/greeter/src/main/__init__.py" {
            text.push_str(
                "\n    @function\n    async def loud(self, name: str) -> str:\n        return await dag.util().upper(self.greet(name))\n",
            );
        }
    }
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    server.commit("mods.git", "main", &refs, "modules");
    let url = format!("{}/mods/greeter", server.daemon_url("mods.git"));

    // Called straight from the repository.
    let at_main = format!("{url}@main");
    assert_eq!(
        ok(
            &engine,
            tmp.path(),
            &["call", "-m", &at_main, "greet", "--name", "git"]
        ),
        "hello, git!\n"
    );
    assert_eq!(
        ok(
            &engine,
            tmp.path(),
            &["call", "-m", &at_main, "loud", "--name", "git"]
        ),
        "HELLO, GIT!\n"
    );
    let functions = ok(&engine, tmp.path(), &["functions", "-m", &at_main]);
    assert!(
        functions.contains("loud") && functions.contains("greet"),
        "{functions}"
    );

    // A local module depending on the git module.
    let app = module(&engine, tmp.path(), "app", APP);
    ok(&engine, &app, &["install", "--name", "greeter", &at_main]);
    let config = std::fs::read_to_string(app.join("dagger.json")).expect("dagger.json");
    assert!(config.contains(&at_main), "{config}");
    assert_eq!(
        ok(&engine, &app, &["call", "card-text", "--name", "al"]),
        "hello, al!\n"
    );

    // A version that does not exist is a clear error.
    let err = fails(
        &engine,
        tmp.path(),
        &["call", "-m", &format!("{url}@nope"), "greet"],
    );
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn a_module_served_under_dagr_run_is_seen_by_its_later_queries() {
    let engine = engine();
    let tmp = tempfile::tempdir().expect("tmp");
    let hello = module(&engine, tmp.path(), "hello", &with_image(HELLO));
    std::fs::write(
        tmp.path().join("serve.graphql"),
        format!(
            "{{ moduleSource(refString: {}) {{ asModule {{ initialize {{ serve }} }} }} }}",
            json!(hello.display().to_string())
        ),
    )
    .expect("query file");
    std::fs::write(
        tmp.path().join("call.graphql"),
        r#"{ hello { hello(name: "run") } }"#,
    )
    .expect("query file");
    // Both queries go through `dagr run`'s session, as an SDK's would.
    let script = format!(
        "{dagr} query serve.graphql && {dagr} query call.graphql",
        dagr = dagr()
    );
    let out = dagr_in(&engine, tmp.path(), &["run", "--", "sh", "-c", &script]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("hello, run!"), "{stdout}");
    // Another session does not see it.
    let out = dagr_in(&engine, tmp.path(), &["query", "call.graphql"]);
    assert!(!out.status.success(), "{}", text(&out));
}
