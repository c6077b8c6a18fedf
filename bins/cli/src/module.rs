//! Module commands: `init`, `develop`, `install`, `functions` and `call`.
//!
//! `functions` and `call` load the module into the session (`moduleSource(..).asModule
//! .initialize.serve`), then read what they need from the client's schema, which now includes
//! the module's objects: its functions are fields, their arguments GraphQL arguments. A `call`
//! becomes one GraphQL query whose arguments are variables typed as the schema types them;
//! `Directory`, `File`, `Secret`, `Container` and `Service` arguments are made from the command
//! line first (host paths, `env:`/`file:`/`cmd:` secrets, image addresses, `tcp://` addresses).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use serde_json::{Value as Json, json};

/// The module file.
const CONFIG_FILE: &str = "dagger.json";

/// A GraphQL type as introspection gives it, written back as text (`[String!]!`).
fn type_text(t: &Json) -> String {
    match t.get("kind").and_then(Json::as_str) {
        Some("NON_NULL") => format!("{}!", type_text(&t["ofType"])),
        Some("LIST") => format!("[{}]", type_text(&t["ofType"])),
        _ => t
            .get("name")
            .and_then(Json::as_str)
            .unwrap_or("?")
            .to_owned(),
    }
}

/// The named type inside wrappers.
fn base(ty: &str) -> &str {
    ty.trim_matches(|c| c == '[' || c == ']' || c == '!')
}

/// `fooBar` -> `foo-bar`: a schema name on the command line.
fn kebab(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            if !out.is_empty() {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        } else if c == '_' {
            out.push('-');
        } else {
            out.push(c);
        }
    }
    out
}

/// `my-module` -> `MyModule`: the name of a module's main object.
fn pascal(name: &str) -> String {
    let mut out = String::new();
    let mut upper = true;
    for c in name.chars() {
        if matches!(c, '-' | '_' | ' ') {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// An argument of a field.
#[derive(Debug, Clone)]
struct ArgInfo {
    name: String,
    description: String,
    ty: String,
    default: Option<String>,
}

/// A field of an object type (a function of a module object).
#[derive(Debug, Clone)]
struct FieldInfo {
    name: String,
    description: String,
    ty: String,
    args: Vec<ArgInfo>,
}

/// What the schema says about the types a call walks through.
struct Schema {
    types: BTreeMap<String, TypeInfo>,
}

#[derive(Debug, Clone)]
struct TypeInfo {
    kind: String,
    fields: Vec<FieldInfo>,
}

const TYPE_REF: &str =
    "kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } }";

impl Schema {
    /// Reads every object type's fields (one introspection query).
    async fn load(client: &dagr_client::Client) -> anyhow::Result<Schema> {
        let q = format!(
            "{{ __schema {{ types {{ name kind fields {{ name description type {{ {TYPE_REF} }} args {{ name description defaultValue type {{ {TYPE_REF} }} }} }} }} }} }}"
        );
        let data = data_of(client.query(json!({ "query": q })).await?)?;
        let mut types = BTreeMap::new();
        for t in data["__schema"]["types"].as_array().into_iter().flatten() {
            let name = t["name"].as_str().unwrap_or_default().to_owned();
            let fields = t["fields"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| FieldInfo {
                    name: f["name"].as_str().unwrap_or_default().to_owned(),
                    description: f["description"].as_str().unwrap_or_default().to_owned(),
                    ty: type_text(&f["type"]),
                    args: f["args"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|a| ArgInfo {
                            name: a["name"].as_str().unwrap_or_default().to_owned(),
                            description: a["description"].as_str().unwrap_or_default().to_owned(),
                            ty: type_text(&a["type"]),
                            default: a["defaultValue"].as_str().map(str::to_owned),
                        })
                        .collect(),
                })
                .collect();
            let kind = t["kind"].as_str().unwrap_or_default().to_owned();
            types.insert(name, TypeInfo { kind, fields });
        }
        Ok(Schema { types })
    }

    fn fields(&self, type_name: &str) -> &[FieldInfo] {
        self.types
            .get(type_name)
            .map(|t| t.fields.as_slice())
            .unwrap_or_default()
    }

    fn kind(&self, type_name: &str) -> &str {
        self.types
            .get(type_name)
            .map(|t| t.kind.as_str())
            .unwrap_or("")
    }

    /// Fields a user calls: not `id`, not the internal ones.
    fn functions(&self, type_name: &str) -> Vec<&FieldInfo> {
        self.fields(type_name)
            .iter()
            .filter(|f| f.name != "id" && !f.name.starts_with("__"))
            .collect()
    }
}

/// The data of a GraphQL answer, or its errors (with an exec's output) as the error.
fn data_of(response: Json) -> anyhow::Result<Json> {
    if let Some(errors) = response
        .get("errors")
        .and_then(Json::as_array)
        .filter(|e| !e.is_empty())
    {
        let mut text = String::new();
        for e in errors {
            text.push_str(
                e.get("message")
                    .and_then(Json::as_str)
                    .unwrap_or("unknown error"),
            );
            let ext = &e["extensions"];
            for stream in ["stdout", "stderr"] {
                if let Some(out) = ext
                    .get(stream)
                    .and_then(Json::as_str)
                    .filter(|s| !s.is_empty())
                {
                    text.push_str(&format!("\n{stream}:\n{out}"));
                }
            }
            text.push('\n');
        }
        bail!("{}", text.trim_end());
    }
    Ok(response.get("data").cloned().unwrap_or(Json::Null))
}

/// Whether a module reference is not a path of this machine but a git reference such as
/// `github.com/owner/repo/sub@v1` or `git://host/repo.git@main`: a scheme, a version, or a host
/// name first that is no local path. The engine makes the final call (`parse_ref`, which also
/// finds the repository's root): this only decides what the CLI looks up on disk.
fn is_git_ref(reference: &str) -> bool {
    let first = reference.split('/').next().unwrap_or_default();
    reference.contains("://")
        || reference
            .rsplit_once('@')
            .is_some_and(|(_, v)| !v.contains('/') && !v.contains(':'))
        || (first.contains('.') && first != "." && first != ".." && !Path::new(reference).exists())
}

/// The module to load: `-m` (a directory, or a git reference), else the nearest directory with
/// a `dagger.json` from here up. Answers what `moduleSource` takes.
pub fn find_module(module: Option<&str>, workdir: &Path) -> anyhow::Result<String> {
    if let Some(m) = module {
        if is_git_ref(m) {
            return Ok(m.to_owned());
        }
        let dir = workdir.join(m);
        if !dir.join(CONFIG_FILE).is_file() {
            bail!(
                "{}: no {CONFIG_FILE} there: not a module (dagr init creates one)",
                dir.display()
            );
        }
        return Ok(dir.display().to_string());
    }
    let mut dir = workdir.to_path_buf();
    loop {
        if dir.join(CONFIG_FILE).is_file() {
            return Ok(dir.display().to_string());
        }
        if !dir.pop() {
            bail!(
                "no module here: no {CONFIG_FILE} in {} or its parents (pass -m DIR, or create one with dagr init)",
                workdir.display()
            );
        }
    }
}

/// Loads the module into the client's session; answers its name.
async fn serve_module(client: &dagr_client::Client, reference: &str) -> anyhow::Result<String> {
    let q = "query($ref: String!) { moduleSource(refString: $ref) { asModule { initialize { name serve } } } }";
    let data = data_of(
        client
            .query(json!({ "query": q, "variables": { "ref": reference } }))
            .await
            .context("loading the module")?,
    )
    .context("loading the module")?;
    Ok(data["moduleSource"]["asModule"]["initialize"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

/// The `Query` field of a module's main object.
fn entry_field<'s>(schema: &'s Schema, module_name: &str) -> anyhow::Result<&'s FieldInfo> {
    let main = pascal(module_name);
    schema
        .fields("Query")
        .iter()
        .find(|f| base(&f.ty) == main)
        .with_context(|| format!("module {module_name} serves no {main} object"))
}

/// Prints the functions of `type_name` as a table.
fn print_functions(schema: &Schema, type_name: &str) {
    let functions = schema.functions(type_name);
    let width = functions
        .iter()
        .map(|f| kebab(&f.name).len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!("{:width$}   Description", "Name");
    for f in functions {
        let description = f.description.lines().next().unwrap_or_default();
        println!("{:width$}   {description}", kebab(&f.name));
    }
}

/// Prints a function's usage: its arguments with types, defaults and descriptions.
fn print_function_help(schema: &Schema, path: &[String], f: &FieldInfo) {
    if !f.description.is_empty() {
        println!("{}\n", f.description.trim());
    }
    println!(
        "Usage:\n  dagr call {} [arguments]{}\n",
        path.join(" "),
        if schema.kind(base(&f.ty)) == "OBJECT" {
            " [function]"
        } else {
            ""
        }
    );
    if f.args.is_empty() {
        println!("Arguments: none");
    } else {
        println!("Arguments:");
        let width = f
            .args
            .iter()
            .map(|a| kebab(&a.name).len() + 2)
            .max()
            .unwrap_or(0);
        for a in &f.args {
            let flag = format!("--{}", kebab(&a.name));
            let mut line = format!("  {flag:width$}  {}", cli_type(&a.ty));
            if a.ty.ends_with('!') && a.default.is_none() {
                line.push_str(" (required)");
            }
            if let Some(d) = &a.default {
                line.push_str(&format!(" (default: {d})"));
            }
            if !a.description.is_empty() {
                line.push_str(&format!(
                    "  {}",
                    a.description.lines().next().unwrap_or_default()
                ));
            }
            println!("{line}");
        }
    }
    let returns = base(&f.ty);
    if schema.kind(returns) == "OBJECT" {
        println!("\nReturns {returns}; functions to chain:");
        for g in schema.functions(returns) {
            println!("  {}", kebab(&g.name));
        }
    } else {
        println!("\nReturns {}", f.ty);
    }
}

/// How an argument's type reads on the command line.
fn cli_type(ty: &str) -> String {
    let b = base(ty);
    let named = b.strip_suffix("ID").filter(|_| b.len() > 2).unwrap_or(b);
    if ty.starts_with('[') {
        format!("[{named}]")
    } else {
        named.to_owned()
    }
}

/// One call of a chain: a field and its argument values (GraphQL variables).
struct Step {
    field: FieldInfo,
    args: Vec<(String, String, Json)>,
}

/// Turns `--name value` text into the JSON value of a GraphQL variable of type `ty`, making
/// objects the command line names (host paths, secrets, images, services) through `client`.
async fn arg_value(
    client: &dagr_client::Client,
    function: &str,
    arg: &ArgInfo,
    text: &str,
) -> anyhow::Result<Json> {
    let b = base(&arg.ty);
    let flag = format!("--{}", kebab(&arg.name));
    if arg.ty.starts_with('[') {
        let mut items = Vec::new();
        for part in text.split(',').filter(|p| !p.is_empty()) {
            let item = ArgInfo {
                ty: b.to_owned(),
                ..arg.clone()
            };
            items.push(Box::pin(arg_value(client, function, &item, part.trim())).await?);
        }
        return Ok(Json::Array(items));
    }
    let bad = |what: &str| anyhow::anyhow!("argument {flag} of {function}: {text:?} is not {what}");
    Ok(match b {
        "String" => Json::String(text.to_owned()),
        "Int" => Json::from(text.parse::<i64>().map_err(|_| bad("an integer"))?),
        "Float" => Json::from(text.parse::<f64>().map_err(|_| bad("a number"))?),
        "Boolean" => Json::Bool(match text {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => return Err(bad("true or false")),
        }),
        "DirectoryID" | "FileID" | "ContainerID" | "SecretID" | "ServiceID" => {
            let (q, vars) = object_query(b, text)
                .map_err(|e| anyhow::anyhow!("argument {flag} of {function}: {e}"))?;
            let data = data_of(
                client
                    .query(json!({ "query": q, "variables": vars }))
                    .await?,
            )
            .with_context(|| format!("argument {flag} of {function}"))?;
            let mut cur = &data;
            while let Json::Object(map) = cur {
                match map.values().next() {
                    Some(next) => cur = next,
                    None => break,
                }
            }
            cur.clone()
        }
        other if other.ends_with("ID") => {
            bail!(
                "argument {flag} of {function}: a {} cannot be given on the command line",
                &other[..other.len() - 2]
            )
        }
        // Enums and custom scalars: as written.
        _ => Json::String(text.to_owned()),
    })
}

/// The query that makes an object argument from its command-line text.
fn object_query(id_type: &str, text: &str) -> anyhow::Result<(String, Json)> {
    Ok(match id_type {
        "DirectoryID" => (
            "query($p: String!) { host { directory(path: $p) { id } } }".into(),
            json!({ "p": text }),
        ),
        "FileID" => (
            "query($p: String!) { host { file(path: $p) { id } } }".into(),
            json!({ "p": text }),
        ),
        "ContainerID" => (
            "query($a: String!) { container { from(address: $a) { id } } }".into(),
            json!({ "a": text }),
        ),
        "SecretID" => {
            let plaintext = secret_plaintext(text)?;
            (
                "query($n: String!, $v: String!) { setSecret(name: $n, plaintext: $v) { id } }"
                    .into(),
                json!({ "n": text.split(':').next().unwrap_or("secret"), "v": plaintext }),
            )
        }
        "ServiceID" => {
            let rest = text
                .strip_prefix("tcp://")
                .with_context(|| format!("{text:?} is not tcp://HOST:PORT"))?;
            let (host, port) = rest
                .rsplit_once(':')
                .with_context(|| format!("{text:?} is not tcp://HOST:PORT"))?;
            let port: u16 = port
                .parse()
                .with_context(|| format!("{text:?}: {port:?} is not a port"))?;
            (
                "query($h: String!, $p: Int!) { host { service(host: $h, ports: [{backend: $p, frontend: $p}]) { id } } }".into(),
                json!({ "h": host, "p": port }),
            )
        }
        other => bail!("{other} arguments cannot be given on the command line"),
    })
}

/// `env:NAME`, `file:PATH` or `cmd:COMMAND` (run with `sh -c`).
fn secret_plaintext(text: &str) -> anyhow::Result<String> {
    let (kind, value) = text
        .split_once(':')
        .with_context(|| format!("secret {text:?} is not env:NAME, file:PATH or cmd:COMMAND"))?;
    Ok(match kind {
        "env" => {
            std::env::var(value).with_context(|| format!("secret {text}: ${value} is not set"))?
        }
        "file" => std::fs::read_to_string(value)
            .with_context(|| format!("secret {text}: reading {value}"))?,
        "cmd" => {
            let out = std::process::Command::new("sh")
                .args(["-c", value])
                .output()
                .with_context(|| format!("secret {text}: running sh"))?;
            if !out.status.success() {
                bail!("secret {text}: the command failed ({})", out.status);
            }
            String::from_utf8_lossy(&out.stdout)
                .trim_end_matches('\n')
                .to_owned()
        }
        _ => bail!("secret {text:?} is not env:NAME, file:PATH or cmd:COMMAND"),
    })
}

/// The first lines of `dagr call --help`.
pub const CALL_USAGE: &str = "Usage:\n  dagr call [-m MODULE] [-o PATH] FUNCTION [--arg value]... [FUNCTION ...]\n\n\
Calls a module's functions. MODULE is a directory or a git reference (default: the nearest\n\
directory with a dagger.json). `dagr call FUNCTION --help` lists a function's arguments.";

/// What `dagr call` was asked.
pub struct CallArgs<'a> {
    pub module: Option<&'a str>,
    pub output: Option<&'a Path>,
    pub args: &'a [String],
}

/// Splits `--name value`, `--name=value` and bare flags (`--flag` of a Boolean).
fn take_flags(
    fn_name: &str,
    field: &FieldInfo,
    words: &[String],
    i: &mut usize,
) -> anyhow::Result<Vec<(ArgInfo, String)>> {
    let mut given = Vec::new();
    while *i < words.len() && words[*i].starts_with("--") && words[*i] != "--help" {
        let word = &words[*i];
        let (name, inline) = match word[2..].split_once('=') {
            Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
            None => (word[2..].to_owned(), None),
        };
        let arg = field
            .args
            .iter()
            .find(|a| kebab(&a.name) == name || a.name == name)
            .with_context(|| {
                let names: Vec<String> = field
                    .args
                    .iter()
                    .map(|a| format!("--{}", kebab(&a.name)))
                    .collect();
                format!(
                    "{fn_name} has no argument --{name} (its arguments: {})",
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names.join(", ")
                    }
                )
            })?;
        *i += 1;
        let value = match inline {
            Some(v) => v,
            None if base(&arg.ty) == "Boolean" && !arg.ty.starts_with('[') => {
                match words.get(*i).map(String::as_str) {
                    Some("true" | "false") => {
                        *i += 1;
                        words[*i - 1].clone()
                    }
                    _ => "true".to_owned(),
                }
            }
            None => {
                let v = words
                    .get(*i)
                    .with_context(|| format!("argument --{name} of {fn_name} needs a value"))?;
                *i += 1;
                v.clone()
            }
        };
        given.push((arg.clone(), value));
    }
    Ok(given)
}

/// `dagr call`: runs a chain of functions and prints (or exports) the result.
pub async fn call(
    client: &dagr_client::Client,
    workdir: &Path,
    a: CallArgs<'_>,
) -> anyhow::Result<ExitCode> {
    let dir = find_module(a.module, workdir)?;
    let module_name = serve_module(client, &dir).await?;
    let schema = Schema::load(client).await?;
    let entry = entry_field(&schema, &module_name)?.clone();
    let words = a.args;
    let mut i = 0;
    let mut steps = Vec::new();
    let mut path = Vec::new();
    // Constructor arguments come first.
    let ctor = take_flags(&module_name, &entry, words, &mut i)?;
    steps.push(build_step(client, &module_name, &entry, ctor).await?);
    let mut current = base(&entry.ty).to_owned();
    let mut last_field = entry.clone();
    while i < words.len() {
        let word = &words[i];
        if word == "--help" || word == "-h" {
            if path.is_empty() {
                println!("{CALL_USAGE}\n\nFunctions of module {module_name}:");
                print_functions(&schema, &current);
            } else {
                print_function_help(&schema, &path, &last_field);
            }
            return Ok(ExitCode::SUCCESS);
        }
        if word.starts_with('-') {
            bail!("{word}: expected a function name (see dagr call --help)");
        }
        let field = schema
            .functions(&current)
            .into_iter()
            .find(|f| kebab(&f.name) == *word || f.name == *word)
            .cloned()
            .with_context(|| {
                let names: Vec<String> = schema
                    .functions(&current)
                    .iter()
                    .map(|f| kebab(&f.name))
                    .collect();
                format!(
                    "{current} has no function {word:?} (functions: {})",
                    names.join(", ")
                )
            })?;
        i += 1;
        path.push(word.clone());
        let given = take_flags(word, &field, words, &mut i)?;
        if words.get(i).is_some_and(|w| w == "--help" || w == "-h") {
            print_function_help(&schema, &path, &field);
            return Ok(ExitCode::SUCCESS);
        }
        steps.push(build_step(client, word, &field, given).await?);
        current = base(&field.ty).to_owned();
        last_field = field;
    }
    if path.is_empty() {
        println!("{CALL_USAGE}\n\nFunctions of module {module_name}:");
        print_functions(&schema, &current);
        return Ok(ExitCode::FAILURE);
    }
    run_steps(client, &schema, &steps, &current, a.output).await
}

/// Checks and converts a step's arguments.
async fn build_step(
    client: &dagr_client::Client,
    fn_name: &str,
    field: &FieldInfo,
    given: Vec<(ArgInfo, String)>,
) -> anyhow::Result<Step> {
    let mut args = Vec::new();
    for a in &field.args {
        let values: Vec<&String> = given
            .iter()
            .filter(|(g, _)| g.name == a.name)
            .map(|(_, v)| v)
            .collect();
        if values.is_empty() {
            if a.ty.ends_with('!') && a.default.is_none() {
                bail!(
                    "{fn_name}: missing required argument --{} ({})",
                    kebab(&a.name),
                    cli_type(&a.ty)
                );
            }
            continue;
        }
        // A repeated list flag adds items.
        let text = values
            .iter()
            .map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let value = arg_value(client, fn_name, a, &text).await?;
        args.push((a.name.clone(), a.ty.clone(), value));
    }
    Ok(Step {
        field: field.clone(),
        args,
    })
}

/// Runs the chain as one query and prints its result.
async fn run_steps(
    client: &dagr_client::Client,
    schema: &Schema,
    steps: &[Step],
    result_type: &str,
    output: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let mut vars = serde_json::Map::new();
    let mut defs = Vec::new();
    let mut body = String::new();
    for step in steps {
        body.push_str(&step.field.name);
        if !step.args.is_empty() {
            let mut parts = Vec::new();
            for (name, ty, value) in &step.args {
                let var = format!("v{}", vars.len());
                defs.push(format!("${var}: {ty}"));
                vars.insert(var.clone(), value.clone());
                parts.push(format!("{name}: ${var}"));
            }
            body.push_str(&format!("({})", parts.join(", ")));
        }
        body.push_str(" { ");
    }
    let kind = schema.kind(result_type);
    let has = |name: &str| schema.fields(result_type).iter().any(|f| f.name == name);
    let selection = if kind != "OBJECT" {
        // A scalar, enum or list of them: the last field is the leaf.
        body.truncate(body.len() - 3);
        String::new()
    } else if let Some(out) = output {
        if !has("export") {
            bail!("-o: a {result_type} cannot be exported");
        }
        let var = format!("v{}", vars.len());
        defs.push(format!("${var}: String!"));
        vars.insert(var.clone(), Json::String(out.display().to_string()));
        format!("export(path: ${var})")
    } else if has("sync") {
        "sync".to_owned()
    } else {
        // A module object: its fields without arguments that are scalars.
        schema
            .fields(result_type)
            .iter()
            .filter(|f| f.args.is_empty() && f.name != "id" && schema.kind(base(&f.ty)) != "OBJECT")
            .map(|f| f.name.clone())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let selection = if kind == "OBJECT" && selection.is_empty() {
        "id".to_owned()
    } else {
        selection
    };
    let mut q = String::from("query");
    if !defs.is_empty() {
        q.push_str(&format!("({})", defs.join(", ")));
    }
    q.push_str(" { ");
    q.push_str(&body);
    q.push_str(&selection);
    let closes = if kind == "OBJECT" {
        steps.len()
    } else {
        steps.len() - 1
    };
    for _ in 0..closes {
        q.push_str(" }");
    }
    q.push_str(" }");
    let data = data_of(
        client
            .query(json!({ "query": q, "variables": vars }))
            .await?,
    )?;
    let mut leaf = &data;
    for step in steps {
        leaf = &leaf[&step.field.name];
    }
    if kind != "OBJECT" {
        let mut text = String::new();
        render_value(leaf, &mut text);
        crate::print_stdout(&text)?;
    } else if output.is_some() {
        eprintln!(
            "dagr call: exported to {}",
            output.map(|p| p.display().to_string()).unwrap_or_default()
        );
    } else if has("sync") {
        eprintln!("{result_type} evaluated");
    } else if let Json::Object(map) = leaf {
        for (k, v) in map {
            if k == "id" {
                continue;
            }
            match v {
                Json::String(s) => println!("{}: {s}", kebab(k)),
                other => println!("{}: {other}", kebab(k)),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Appends `v` as `dagr call` prints a leaf: a string as it is, ending in a newline; a list
/// item by item; anything else as JSON on a line.
fn render_value(v: &Json, text: &mut String) {
    match v {
        Json::Null => {}
        Json::String(s) => {
            text.push_str(s);
            if !s.ends_with('\n') {
                text.push('\n');
            }
        }
        Json::Array(items) => items.iter().for_each(|item| render_value(item, text)),
        other => {
            text.push_str(&other.to_string());
            text.push('\n');
        }
    }
}

/// `dagr functions [FUNCTION...]`.
pub async fn functions(
    client: &dagr_client::Client,
    workdir: &Path,
    module: Option<&str>,
    path: &[String],
) -> anyhow::Result<ExitCode> {
    let dir = find_module(module, workdir)?;
    let module_name = serve_module(client, &dir).await?;
    let schema = Schema::load(client).await?;
    let mut current = base(&entry_field(&schema, &module_name)?.ty).to_owned();
    for word in path {
        let field = schema
            .functions(&current)
            .into_iter()
            .find(|f| kebab(&f.name) == *word || f.name == *word)
            .with_context(|| format!("{current} has no function {word:?}"))?;
        current = base(&field.ty).to_owned();
        if schema.kind(&current) != "OBJECT" {
            bail!("{word} returns {}, which has no functions", field.ty);
        }
    }
    print_functions(&schema, &current);
    Ok(ExitCode::SUCCESS)
}

/// `dagr init` and `dagr develop`: writes the module's `dagger.json` and, where missing, the
/// SDK's template files.
pub async fn init(
    client: &dagr_client::Client,
    dir: &Path,
    name: Option<&str>,
    sdk: Option<&str>,
    source: Option<&str>,
) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut chain = String::from("moduleSource(refString: $ref) { ");
    let mut closes = 1;
    let mut vars = json!({ "ref": dir.display().to_string(), "out": dir.display().to_string() });
    let mut defs = vec!["$ref: String!", "$out: String!"];
    if let Some(name) = name {
        chain.push_str("withName(name: $name) { ");
        vars["name"] = json!(name);
        defs.push("$name: String!");
        closes += 1;
    }
    if let Some(sdk) = sdk {
        chain.push_str("withSDK(sdk: $sdk) { ");
        vars["sdk"] = json!(sdk);
        defs.push("$sdk: String!");
        closes += 1;
    }
    if let Some(source) = source {
        chain.push_str("withSourceSubpath(path: $source) { ");
        vars["source"] = json!(source);
        defs.push("$source: String!");
        closes += 1;
    }
    chain.push_str("asModule { generatedContextDiff { export(path: $out) } }");
    for _ in 0..closes {
        chain.push_str(" }");
    }
    let q = format!("query({}) {{ {chain} }}", defs.join(", "));
    data_of(
        client
            .query(json!({ "query": q, "variables": vars }))
            .await?,
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `dagr install PATH`: adds the module at PATH to the dependencies in `dagger.json`, then
/// generates the module's code for it (as `dagr develop`); `dagger.json` is left as it was when
/// that fails (a dependency cycle, a dependency that does not load).
pub async fn install(
    client: &dagr_client::Client,
    module_dir: &Path,
    dependency: &str,
    workdir: &Path,
    name: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let config_path = module_dir.join(CONFIG_FILE);
    let before = std::fs::read(&config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    add_dependency(client, module_dir, dependency, workdir, name).await?;
    match init(client, module_dir, None, None, None).await {
        Ok(code) => Ok(code),
        Err(e) => {
            std::fs::write(&config_path, before)
                .with_context(|| format!("restoring {}", config_path.display()))?;
            Err(e.context(format!(
                "installing {dependency} (dagger.json left unchanged)"
            )))
        }
    }
}

/// Adds the module `dependency` (a directory, or a git reference) to the dependencies in
/// `module_dir/dagger.json`, under its own name unless `name` is given.
async fn add_dependency(
    client: &dagr_client::Client,
    module_dir: &Path,
    dependency: &str,
    workdir: &Path,
    name: Option<&str>,
) -> anyhow::Result<()> {
    let config_path = module_dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let mut config: Json =
        serde_json::from_str(&text).with_context(|| format!("{}", config_path.display()))?;
    let (reference, source) = if is_git_ref(dependency) {
        (dependency.to_owned(), dependency.to_owned())
    } else {
        let dep_abs =
            std::path::absolute(workdir.join(dependency)).with_context(|| dependency.to_owned())?;
        if !dep_abs.join(CONFIG_FILE).is_file() {
            bail!("{dependency}: not a module (no {CONFIG_FILE})");
        }
        let module_abs = std::path::absolute(module_dir)?;
        (
            dep_abs.display().to_string(),
            relative(&module_abs, &dep_abs),
        )
    };
    let dep_name = match name {
        Some(n) => n.to_owned(),
        None => {
            let q = "query($ref: String!) { moduleSource(refString: $ref) { moduleName } }";
            let data = data_of(
                client
                    .query(json!({ "query": q, "variables": { "ref": reference } }))
                    .await?,
            )
            .with_context(|| format!("reading the module {dependency}"))?;
            data["moduleSource"]["moduleName"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        }
    };
    let deps = config
        .as_object_mut()
        .with_context(|| format!("{}: not a JSON object", config_path.display()))?
        .entry("dependencies")
        .or_insert_with(|| json!([]));
    let list = deps.as_array_mut().with_context(|| {
        format!(
            "{}: field \"dependencies\" is not a list",
            config_path.display()
        )
    })?;
    list.retain(|d| d["name"].as_str() != Some(dep_name.as_str()));
    list.push(json!({ "name": dep_name, "source": source }));
    std::fs::write(
        &config_path,
        format!("{}\n", serde_json::to_string_pretty(&config)?),
    )
    .with_context(|| format!("writing {}", config_path.display()))?;
    eprintln!(
        "installed {dep_name} ({source}) in {}",
        config_path.display()
    );
    Ok(())
}

/// `to` relative to `from` (both absolute).
fn relative(from: &Path, to: &Path) -> String {
    let from: Vec<_> = from.components().collect();
    let to: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> =
        std::iter::repeat_n("..".to_owned(), from.len() - common).collect();
    parts.extend(
        to[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    if parts.is_empty() {
        ".".to_owned()
    } else {
        parts.join("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        assert_eq!(kebab("containerEcho"), "container-echo");
        assert_eq!(kebab("a"), "a");
        assert_eq!(pascal("my-mod"), "MyMod");
        assert_eq!(
            relative(Path::new("/a/b/m"), Path::new("/a/b/dep")),
            "../dep"
        );
        assert_eq!(relative(Path::new("/a"), Path::new("/a/x/y")), "x/y");
        assert_eq!(cli_type("[String!]"), "[String]");
        assert_eq!(cli_type("DirectoryID!"), "Directory");
        assert_eq!(
            type_text(
                &json!({"kind":"NON_NULL","ofType":{"kind":"LIST","ofType":{"kind":"NON_NULL","ofType":{"kind":"SCALAR","name":"String"}}}})
            ),
            "[String!]!"
        );
    }
}
