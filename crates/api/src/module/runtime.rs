//! Module runtimes: how a module's code becomes a container that answers function calls.
//! [`ModuleRuntime`] is the seam (one implementation per SDK); [`PythonRuntime`] runs the
//! official `dagger-io` package, installed with pip from the package index the engine is given.

use serde::Deserialize;

/// Where the runtime containers of modules come from and how they install packages. Set by
/// the engine's flags.
#[derive(Clone, Debug, Default)]
pub struct RuntimeSettings {
    /// `PIP_INDEX_URL` / `UV_INDEX_URL` of installs (none: the image's own settings or PyPI).
    pub python_index_url: Option<String>,
    /// `PIP_FIND_LINKS` of installs: a URL, or a directory inside the base image.
    pub python_find_links: Option<String>,
}

/// What a runtime builds its container from.
pub struct RuntimeSource<'a> {
    /// The module's source directory inside the context (`.` for the root).
    pub source_subpath: &'a str,
    /// Files of the module's source directory, read before the build: the runtime's own
    /// configuration (`pyproject.toml`).
    pub config_file: Option<&'a str>,
    /// The module's dependencies (initialized): the runtime generates their bindings.
    pub dependencies: &'a [std::sync::Arc<super::Module>],
}

/// Why a runtime cannot build a module.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("pyproject.toml: {0}")]
    Pyproject(String),
}

/// An SDK's runtime: a GraphQL document that the engine runs for the caller to build the
/// container whose entrypoint serves function calls (registration included), and the files
/// `init` writes into a new module.
pub trait ModuleRuntime: Send + Sync {
    /// The file of the module's source directory that configures the runtime, if any.
    fn config_file(&self) -> Option<&'static str>;
    /// A query with a `$context: DirectoryID!` variable whose one field chain ends in
    /// `{ id }` of the runtime container.
    fn container_query(
        &self,
        source: &RuntimeSource<'_>,
        settings: &RuntimeSettings,
    ) -> Result<String, RuntimeError>;
    /// Files of a new module (path, contents), written where missing.
    fn template(&self, module_name: &str) -> Vec<(String, String)>;
    /// The client code generated for the module's dependencies (path in the module's source
    /// directory, contents), which `init`, `develop` and `install` write for editors; the
    /// runtime container gets the same code.
    fn generated_code(
        &self,
        dependencies: &[std::sync::Arc<super::Module>],
    ) -> Option<(String, String)>;
}

/// The runtime of the SDK named `sdk`, or `None` for an SDK dagr has no runtime for.
pub fn runtime_for(sdk: &str) -> Option<&'static dyn ModuleRuntime> {
    match sdk {
        "python" => Some(&PythonRuntime),
        _ => None,
    }
}

/// The SDK names [`runtime_for`] knows.
pub const SDKS: &[&str] = &["python"];

/// The Python SDK: `dagger-io` from the package index, in a virtualenv of the base image.
pub struct PythonRuntime;

/// Dagger v0.11.8's Python base image, pinned by digest as Dagger pins it.
pub const PYTHON_BASE_IMAGE: &str = "docker.io/library/python:3.11-slim@sha256:ce81dc539f0aedc9114cae640f8352fad83d37461c24a3615b01f081d0c0583a";

/// The `dagger-io` version new modules depend on: the SDK version of the API dagr serves.
pub const DAGGER_IO_VERSION: &str = "0.11.8";

/// `[tool.dagger]` of `pyproject.toml`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct PythonUserConfig {
    base_image: Option<String>,
    /// Accepted for compatibility: dagr installs with pip either way.
    #[allow(dead_code)]
    use_uv: Option<bool>,
    #[allow(dead_code)]
    uv_version: Option<String>,
}

#[derive(Deserialize, Default)]
struct Pyproject {
    #[serde(default)]
    tool: PyprojectTool,
}

#[derive(Deserialize, Default)]
struct PyprojectTool {
    #[serde(default)]
    dagger: PythonUserConfig,
}

/// A GraphQL string literal.
fn lit(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// Installs what `pyproject.toml` needs (its dependencies and its build backend, with
/// `editables`, which hatchling's editable builds ask for) without the module itself, so that
/// the module is then installed with `--no-build-isolation` in a fraction of a second.
const INSTALL_DEPENDENCIES: &str = "import subprocess, sys, tomllib\n\
with open('pyproject.toml', 'rb') as f:\n    p = tomllib.load(f)\n\
build = p.get('build-system', {})\n\
deps = p.get('project', {}).get('dependencies', []) + build.get('requires', [])\n\
if build.get('build-backend', '').startswith('hatchling'):\n    deps.append('editables')\n\
if deps:\n    subprocess.check_call([sys.executable, '-m', 'pip', 'install', '--no-input', *deps])\n";

/// The entrypoint: the SDK's own module command line.
const RUNTIME_SCRIPT: &str =
    "#!/opt/venv/bin/python\nimport sys\nfrom dagger.mod.cli import app\n\nsys.exit(app())\n";

impl ModuleRuntime for PythonRuntime {
    fn config_file(&self) -> Option<&'static str> {
        Some("pyproject.toml")
    }

    fn container_query(
        &self,
        source: &RuntimeSource<'_>,
        settings: &RuntimeSettings,
    ) -> Result<String, RuntimeError> {
        let user: Pyproject = match source.config_file {
            Some(text) => {
                toml::from_str(text).map_err(|e| RuntimeError::Pyproject(e.to_string()))?
            }
            None => Pyproject::default(),
        };
        let base = user
            .tool
            .dagger
            .base_image
            .unwrap_or_else(|| PYTHON_BASE_IMAGE.to_owned());
        let mut env = vec![
            ("DAGGER_BASE_IMAGE", base.clone()),
            ("PYTHONUNBUFFERED", "1".to_owned()),
            ("PIP_DISABLE_PIP_VERSION_CHECK", "1".to_owned()),
            ("PIP_ROOT_USER_ACTION", "ignore".to_owned()),
        ];
        if let Some(url) = &settings.python_index_url {
            env.push(("PIP_INDEX_URL", url.clone()));
            env.push(("UV_INDEX_URL", url.clone()));
        }
        if let Some(links) = &settings.python_find_links {
            env.push(("PIP_FIND_LINKS", links.clone()));
        }
        let workdir = crate::state::join("/src", source.source_subpath);
        let mut q = String::from("query($context: DirectoryID!) { container { ");
        let mut close = 1;
        let mut step = |q: &mut String, field: String| {
            q.push_str(&field);
            q.push_str(" { ");
            close += 1;
        };
        step(&mut q, format!("from(address: {})", lit(&base)));
        for (name, value) in env {
            step(
                &mut q,
                format!(
                    "withEnvVariable(name: {}, value: {})",
                    lit(name),
                    lit(&value)
                ),
            );
        }
        step(
            &mut q,
            r#"withExec(args: ["python3", "-m", "venv", "/opt/venv"])"#.to_owned(),
        );
        step(
            &mut q,
            r#"withEnvVariable(name: "VIRTUAL_ENV", value: "/opt/venv")"#.to_owned(),
        );
        step(
            &mut q,
            r#"withEnvVariable(name: "PATH", value: "/opt/venv/bin:${PATH}", expand: true)"#
                .to_owned(),
        );
        // The dependencies first, from pyproject.toml alone (written from its contents, so
        // that the step is keyed by them): a change of the module's code, the common case,
        // reuses them and only links the package again.
        if let Some(pyproject) = source.config_file {
            step(
                &mut q,
                format!(
                    "withNewFile(path: {}, contents: {})",
                    lit(&crate::state::join(&workdir, "pyproject.toml")),
                    lit(pyproject)
                ),
            );
            step(&mut q, format!("withWorkdir(path: {})", lit(&workdir)));
            step(
                &mut q,
                format!(
                    "withExec(args: [\"python\", \"-c\", {}])",
                    lit(INSTALL_DEPENDENCIES)
                ),
            );
        } else {
            step(&mut q, format!("withWorkdir(path: {})", lit(&workdir)));
        }
        step(
            &mut q,
            r#"withDirectory(path: "/src", directory: $context)"#.to_owned(),
        );
        step(
            &mut q,
            r#"withExec(args: ["pip", "install", "--no-input", "--no-deps", "--no-build-isolation", "-e", "."])"#
                .to_owned(),
        );
        if !source.dependencies.is_empty() {
            // The dependencies' bindings, imported at interpreter start by a .pth file of the
            // virtualenv: `dag.<dependency>()` works in the module's code as in Dagger's.
            let code = super::codegen_python::bindings(source.dependencies);
            step(
                &mut q,
                format!(
                    "withNewFile(path: {}, contents: {})",
                    lit(&format!("/opt/dagr/{}.py", super::codegen_python::MODULE)),
                    lit(&code)
                ),
            );
            let pth = format!(
                "import pathlib, sysconfig; pathlib.Path(sysconfig.get_paths()['purelib'], '{m}.pth').write_text('/opt/dagr\\nimport {m}\\n')",
                m = super::codegen_python::MODULE
            );
            step(
                &mut q,
                format!("withExec(args: [\"python\", \"-c\", {}])", lit(&pth)),
            );
        }
        step(
            &mut q,
            format!(
                "withNewFile(path: \"/runtime\", contents: {}, permissions: 493)",
                lit(RUNTIME_SCRIPT)
            ),
        );
        step(&mut q, r#"withEntrypoint(args: ["/runtime"])"#.to_owned());
        q.push_str("id");
        for _ in 0..close {
            q.push_str(" }");
        }
        q.push_str(" }");
        Ok(q)
    }

    fn generated_code(
        &self,
        dependencies: &[std::sync::Arc<super::Module>],
    ) -> Option<(String, String)> {
        if dependencies.is_empty() {
            return None;
        }
        Some((
            format!("sdk/{}.py", super::codegen_python::MODULE),
            super::codegen_python::bindings(dependencies),
        ))
    }

    fn template(&self, module_name: &str) -> Vec<(String, String)> {
        let package = module_name.replace('-', "_").to_lowercase();
        let class = super::typedef::pascal(module_name);
        vec![
            (
                "pyproject.toml".to_owned(),
                format!(
                    "[project]\nname = \"main\"\nversion = \"0.0.0\"\ndependencies = [\"dagger-io=={DAGGER_IO_VERSION}\"]\n\n[build-system]\nrequires = [\"hatchling\"]\nbuild-backend = \"hatchling.build\"\n\n[tool.hatch.build.targets.wheel]\npackages = [\"src/main\"]\n\n# [tool.dagger]\n# base-image = \"python:3.11-slim\"\n# ({package}: the module's code is in src/main)\n"
                ),
            ),
            (
                "src/main/__init__.py".to_owned(),
                format!(
                    "\"\"\"A generated module for {class} functions\"\"\"\n\nimport dagger\nfrom dagger import dag, function, object_type\n\n\n@object_type\nclass {class}:\n    @function\n    def container_echo(self, string_arg: str) -> dagger.Container:\n        \"\"\"Returns a container that echoes whatever string argument is provided\"\"\"\n        return dag.container().from_(\"alpine:latest\").with_exec([\"echo\", string_arg])\n\n    @function\n    async def grep_dir(self, directory_arg: dagger.Directory, pattern: str) -> str:\n        \"\"\"Returns lines that match a pattern in the files of the provided Directory\"\"\"\n        return await (\n            dag.container()\n            .from_(\"alpine:latest\")\n            .with_mounted_directory(\"/mnt\", directory_arg)\n            .with_workdir(\"/mnt\")\n            .with_exec([\"grep\", \"-R\", pattern, \".\"])\n            .stdout()\n        )\n"
                ),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_image_comes_from_pyproject() {
        let settings = RuntimeSettings {
            python_index_url: Some("http://127.0.0.1:1/simple".into()),
            python_find_links: None,
        };
        let source = RuntimeSource {
            source_subpath: ".",
            config_file: Some("[tool.dagger]\nbase-image = \"127.0.0.1:5000/py:3\"\n"),
            dependencies: &[],
        };
        let q = PythonRuntime.container_query(&source, &settings).unwrap();
        assert!(q.contains(r#"from(address: "127.0.0.1:5000/py:3")"#), "{q}");
        assert!(q.contains("PIP_INDEX_URL"), "{q}");
        let default = RuntimeSource {
            config_file: None,
            ..source
        };
        let q = PythonRuntime.container_query(&default, &settings).unwrap();
        assert!(q.contains(PYTHON_BASE_IMAGE));
        let bad = RuntimeSource {
            config_file: Some("[tool.dagger\n"),
            ..default
        };
        assert!(PythonRuntime.container_query(&bad, &settings).is_err());
    }
}
