//! Python bindings of a module's dependencies: a `dagr_deps` Python module that adds, to the
//! official SDK's client (`dagger.Client`, whose instance is `dag`), an entry point per
//! dependency and a class per dependency object, written the way the SDK's own generated client
//! is (`Type` subclasses whose methods `_select` fields with `Arg`s). The SDK builds its queries
//! against the schema it introspects from its client, which for a function call includes the
//! dependencies (see `Modules::schema_for`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::Module;
use super::typedef::{Function, Kind, TypeDef, lower_camel};

/// The Python module name of the bindings.
pub const MODULE: &str = "dagr_deps";

/// What a type is in the bindings.
struct Names<'a> {
    /// Registered object name -> schema (class) name, for the dependency's objects.
    objects: BTreeMap<&'a str, String>,
}

impl Names<'_> {
    /// The class of an object: one of the bindings, else the SDK's.
    fn class(&self, name: &str) -> String {
        match self.objects.get(name) {
            Some(schema) => schema.clone(),
            None => format!("dagger.{name}"),
        }
    }
}

/// A Python string literal.
fn py_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// A docstring body (no triple quotes inside).
fn doc(s: &str) -> String {
    s.replace('\\', "\\\\").replace("\"\"\"", "\\\"\\\"\\\"")
}

/// A parameter name that is not a Python keyword.
fn param(name: &str) -> String {
    const KEYWORDS: &[&str] = &[
        "and", "as", "assert", "async", "await", "break", "class", "continue", "def", "del",
        "elif", "else", "except", "finally", "for", "from", "global", "if", "import", "in", "is",
        "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while", "with",
        "yield", "self", "None", "True", "False",
    ];
    if KEYWORDS.contains(&name) {
        format!("{name}_")
    } else {
        name.to_owned()
    }
}

/// The Python type a scalar result is executed as.
fn scalar_type(t: &TypeDef) -> Option<String> {
    Some(match &t.kind {
        Kind::String | Kind::Scalar(_) => "str".into(),
        Kind::Integer => "int".into(),
        Kind::Boolean => "bool".into(),
        Kind::Void => "type(None)".into(),
        Kind::List(item) => format!("list[{}]", scalar_type(item)?),
        _ => return None,
    })
}

/// The body of a method whose result the bindings cannot express.
fn unmapped(field: &str, ret: &TypeDef) -> String {
    format!(
        "raise TypeError({})",
        py_str(&format!(
            "{field} returns {}, which dagr's Python bindings do not map",
            ret.display_name()
        ))
    )
}

/// One method (or, with `receiver` "Client", an entry point) selecting `f`.
fn method(out: &mut String, names: &Names<'_>, f: &Function, field: &str, indent: &str) {
    let mut params = vec!["self".to_owned()];
    let mut keyword = Vec::new();
    let mut args = Vec::new();
    for a in &f.args {
        let p = param(&a.name);
        let gql = lower_camel(&a.name);
        if a.type_def.optional || a.default_value.is_some() {
            keyword.push(format!("{p}=None"));
            args.push(format!("Arg({}, {p}, None)", py_str(&gql)));
        } else {
            params.push(p.clone());
            args.push(format!("Arg({}, {p})", py_str(&gql)));
        }
    }
    if !keyword.is_empty() {
        params.push("*".into());
        params.extend(keyword);
    }
    let ret = &f.return_type;
    let (is_async, body) = match (scalar_type(ret), &ret.kind) {
        (Some(py), _) => (true, format!("return await _ctx.execute({py})")),
        (None, Kind::Object(o)) => (false, format!("return {}(_ctx)", names.class(&o.name))),
        (None, Kind::Interface(i)) => (false, format!("return {}(_ctx)", names.class(&i.name))),
        (None, Kind::List(item)) => {
            let class = match &item.kind {
                Kind::Object(o) => names.class(&o.name),
                Kind::Interface(i) => names.class(&i.name),
                _ => String::new(),
            };
            if class.is_empty() {
                (true, unmapped(field, ret))
            } else {
                let load = format!("load{}FromID", class.trim_start_matches("dagger."));
                (
                    true,
                    format!(
                        "_ctx = {class}(_ctx)._select(\"id\", [])\n{indent}    _ids = await _ctx.execute(list[_Id])\n{indent}    return [{class}(dagger.Client.from_context(_ctx)._select({}, [Arg(\"id\", v.id)])) for v in _ids]",
                        py_str(&load)
                    ),
                )
            }
        }
        (None, _) => (true, unmapped(field, ret)),
    };
    let _ = writeln!(
        out,
        "{indent}{}def {}({}):",
        if is_async { "async " } else { "" },
        param(&f.name),
        params.join(", ")
    );
    if !f.description.is_empty() {
        let _ = writeln!(out, "{indent}    \"\"\"{}\"\"\"", doc(&f.description));
    }
    let _ = writeln!(out, "{indent}    _args = [{}]", args.join(", "));
    let _ = writeln!(
        out,
        "{indent}    _ctx = self._select({}, _args)",
        py_str(field)
    );
    let _ = writeln!(out, "{indent}    {body}");
    out.push('\n');
}

/// The bindings of `deps` (modules whose objects have their registered names): Python code.
pub fn bindings(deps: &[std::sync::Arc<Module>]) -> String {
    let mut out = String::from(
        "# Code generated by dagr for this module's dependencies. DO NOT EDIT.\n\
         from dataclasses import dataclass\n\n\
         import dagger\n\
         from dagger.client._core import Arg\n\
         from dagger.client.base import Scalar, Type\n\n\n\
         @dataclass\n\
         class _Id:\n    id: str\n\n\n",
    );
    for m in deps {
        let names = Names {
            objects: m
                .objects
                .iter()
                .filter_map(TypeDef::as_object)
                .map(|o| (o.name.as_str(), m.object_schema_name(&o.name)))
                .collect(),
        };
        for o in m.objects.iter().filter_map(TypeDef::as_object) {
            let class = names.class(&o.name);
            let _ = writeln!(
                out,
                "class {class}ID(Scalar):\n    \"\"\"The ID of a {class}.\"\"\"\n\n"
            );
            let _ = writeln!(out, "class {class}(Type):");
            let _ = writeln!(
                out,
                "    \"\"\"{}\"\"\"\n",
                doc(if o.description.is_empty() {
                    &class
                } else {
                    &o.description
                })
            );
            let _ = writeln!(
                out,
                "    async def id(self) -> {class}ID:\n        _ctx = self._select(\"id\", [])\n        return await _ctx.execute({class}ID)\n"
            );
            for field in &o.fields {
                let getter = Function {
                    name: field.name.clone(),
                    description: field.description.clone(),
                    args: Vec::new(),
                    return_type: field.type_def.clone(),
                };
                method(&mut out, &names, &getter, &lower_camel(&field.name), "    ");
            }
            for f in &o.functions {
                method(&mut out, &names, f, &lower_camel(&f.name), "    ");
            }
            out.push('\n');
        }
        // The entry point: `dag.<module>(...)`, the main object's constructor.
        let main = m.main_object_name();
        let entry = lower_camel(&m.name);
        let main_def = m.object(&main);
        let constructor = Function {
            name: m.name.replace('-', "_"),
            description: main_def.map(|o| o.description.clone()).unwrap_or_default(),
            args: main_def
                .and_then(|o| o.constructor.as_ref())
                .map(|c| c.args.clone())
                .unwrap_or_default(),
            return_type: TypeDef {
                kind: Kind::Object(super::typedef::ObjectTypeDef {
                    name: main_def
                        .map(|o| o.name.clone())
                        .unwrap_or_else(|| main.clone()),
                    ..Default::default()
                }),
                optional: false,
            },
        };
        let func = format!("_entry_{}", param(&constructor.name));
        let mut entry_code = String::new();
        method(&mut entry_code, &names, &constructor, &entry, "");
        out.push_str(&entry_code.replacen(
            &format!("def {}(", param(&constructor.name)),
            &format!("def {func}("),
            1,
        ));
        let _ = writeln!(
            out,
            "dagger.Client.{} = {func}\n\n",
            param(&constructor.name)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::module::typedef::{FunctionArg, ObjectTypeDef};

    fn string() -> TypeDef {
        TypeDef {
            kind: Kind::String,
            optional: false,
        }
    }

    #[test]
    fn binds_objects_functions_and_the_entry_point() {
        let greeter = ObjectTypeDef {
            name: "Greeter".into(),
            description: "Greets".into(),
            functions: vec![
                Function {
                    name: "greet".into(),
                    description: "Says hi".into(),
                    args: vec![
                        FunctionArg {
                            name: "name".into(),
                            description: String::new(),
                            type_def: string(),
                            default_value: None,
                        },
                        FunctionArg {
                            name: "from".into(),
                            description: String::new(),
                            type_def: string(),
                            default_value: Some("\"me\"".into()),
                        },
                    ],
                    return_type: string(),
                },
                Function {
                    name: "base".into(),
                    description: String::new(),
                    args: vec![],
                    return_type: TypeDef {
                        kind: Kind::Object(ObjectTypeDef {
                            name: "Container".into(),
                            ..Default::default()
                        }),
                        optional: false,
                    },
                },
            ],
            ..Default::default()
        };
        let m = Module {
            name: "greeter".into(),
            objects: vec![TypeDef {
                kind: Kind::Object(greeter),
                optional: false,
            }],
            ..Default::default()
        };
        let code = bindings(&[Arc::new(m)]);
        assert!(code.contains("class Greeter(Type):"), "{code}");
        assert!(
            code.contains("async def greet(self, name, *, from_=None):"),
            "{code}"
        );
        assert!(
            code.contains("_args = [Arg(\"name\", name), Arg(\"from\", from_, None)]"),
            "{code}"
        );
        assert!(code.contains("return await _ctx.execute(str)"), "{code}");
        assert!(code.contains("def base(self):"), "{code}");
        assert!(code.contains("return dagger.Container(_ctx)"), "{code}");
        assert!(
            code.contains("dagger.Client.greeter = _entry_greeter"),
            "{code}"
        );
        assert!(
            code.contains("_ctx = self._select(\"greeter\", _args)"),
            "{code}"
        );
    }
}
