//! Printing a [`Schema`] as SDL.

use indexmap::IndexMap;

use super::{InputValueDef, ScalarKind, Schema, TypeDef};
use crate::value::write_string_literal;

impl Schema {
    /// The schema as SDL (without built-in scalars, built-in directives and introspection types).
    pub fn sdl(&self) -> String {
        let mut blocks: Vec<String> = Vec::new();
        for d in self.inner.directives.values() {
            if matches!(
                d.name.as_str(),
                "include" | "skip" | "deprecated" | "specifiedBy"
            ) {
                continue;
            }
            let mut out = String::new();
            write_description(&mut out, d.description.as_deref(), "");
            out.push_str(&format!("directive @{}", d.name));
            write_args(&mut out, &d.args, "");
            if d.repeatable {
                out.push_str(" repeatable");
            }
            out.push_str(&format!(" on {}", d.locations.join(" | ")));
            blocks.push(out);
        }
        for def in self.inner.types.values() {
            if def.name().starts_with("__") {
                continue;
            }
            let mut out = String::new();
            write_description(&mut out, def.description(), "");
            match def {
                TypeDef::Scalar(s) => {
                    if s.kind != ScalarKind::Custom && !matches!(s.kind, ScalarKind::ObjectId(_)) {
                        continue;
                    }
                    out.push_str(&format!("scalar {}", s.name));
                    if let Some(url) = &s.specified_by {
                        out.push_str(" @specifiedBy(url: ");
                        write_string_literal(url, &mut out);
                        out.push(')');
                    }
                }
                TypeDef::Object(o) => {
                    out.push_str(&format!("type {} {{\n", o.name));
                    for f in o.fields.values().filter(|f| !f.hidden) {
                        write_description(&mut out, f.description.as_deref(), "  ");
                        out.push_str("  ");
                        out.push_str(&f.name);
                        write_args(&mut out, &f.args, "  ");
                        out.push_str(&format!(": {}", f.ty));
                        write_deprecated(&mut out, f.deprecation.as_deref());
                        out.push('\n');
                    }
                    out.push('}');
                }
                TypeDef::Enum(e) => {
                    out.push_str(&format!("enum {} {{\n", e.name));
                    for v in e.values.values() {
                        write_description(&mut out, v.description.as_deref(), "  ");
                        out.push_str("  ");
                        out.push_str(&v.name);
                        write_deprecated(&mut out, v.deprecation.as_deref());
                        out.push('\n');
                    }
                    out.push('}');
                }
                TypeDef::InputObject(i) => {
                    out.push_str(&format!("input {} {{\n", i.name));
                    for f in i.fields.values() {
                        write_description(&mut out, f.description.as_deref(), "  ");
                        out.push_str("  ");
                        write_input_value(&mut out, f);
                        out.push('\n');
                    }
                    out.push('}');
                }
            }
            blocks.push(out);
        }
        let mut sdl = blocks.join("\n\n");
        sdl.push('\n');
        sdl
    }
}

fn write_description(out: &mut String, description: Option<&str>, indent: &str) {
    let Some(text) = description else { return };
    out.push_str(indent);
    out.push_str("\"\"\"\n");
    for line in text.replace("\"\"\"", "\\\"\"\"").lines() {
        out.push_str(indent);
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(indent);
    out.push_str("\"\"\"\n");
}

fn write_deprecated(out: &mut String, reason: Option<&str>) {
    let Some(reason) = reason else { return };
    if reason == "No longer supported" {
        out.push_str(" @deprecated");
    } else {
        out.push_str(" @deprecated(reason: ");
        write_string_literal(reason, out);
        out.push(')');
    }
}

fn write_input_value(out: &mut String, v: &InputValueDef) {
    out.push_str(&format!("{}: {}", v.name, v.ty));
    if let Some(default) = &v.default {
        out.push_str(" = ");
        out.push_str(&default.to_literal());
    }
    write_deprecated(out, v.deprecation.as_deref());
}

fn write_args(out: &mut String, args: &IndexMap<String, InputValueDef>, indent: &str) {
    if args.is_empty() {
        return;
    }
    if args.values().all(|a| a.description.is_none()) {
        out.push('(');
        for (i, a) in args.values().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            write_input_value(out, a);
        }
        out.push(')');
        return;
    }
    out.push_str("(\n");
    let inner = format!("{indent}  ");
    for a in args.values() {
        write_description(out, a.description.as_deref(), &inner);
        out.push_str(&inner);
        write_input_value(out, a);
        out.push('\n');
    }
    out.push_str(indent);
    out.push(')');
}
