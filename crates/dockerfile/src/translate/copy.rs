//! COPY and ADD: one copy op per source onto the stage's filesystem, in order.
//!
//! Sources are paths of the context (with `.dockerignore` applied) or of the `--from` stage or
//! image root, globs allowed, a directory's contents copied; the destination is relative to
//! the working directory and is a directory when it ends with `/` or exists as one (several
//! sources onto a destination without `/` are each copied onto that path, as in BuildKit).
//! ADD extracts local archives and downloads HTTP(S) URLs; heredoc sources are written into an
//! empty filesystem and copied from there. `--link` makes no difference here.

use dagr_solver::{CopyOp, HttpOp, InputRef, MkFileOp, Op, Owner};

use super::{Fs, Inputs, StageState, Translator, expand_with, map_root, vertex};
use crate::error::{BuildError, BuildErrorKind};
use crate::instructions::{Add, Copy, Files};
use crate::paths;
use crate::remote::{is_git_source, is_http_source, url_filename};
use crate::shell::Lex;

/// Sources and destination with variables expanded.
struct ExpandedFiles {
    sources: Vec<String>,
    /// Heredoc files: name and contents.
    inline: Vec<(String, String)>,
    dest: String,
}

/// How files are copied.
struct CopyOptions {
    owner: Option<Owner>,
    mode: Option<u32>,
    exclude: Vec<String>,
    parents: bool,
    /// ADD: whether to extract archives (`--unpack`; local archives by default).
    add: Option<Option<bool>>,
}

impl Translator<'_> {
    pub(super) fn copy(
        &mut self,
        st: &mut StageState,
        line: usize,
        c: &Copy,
    ) -> Result<(), BuildError> {
        let from = match &c.from {
            Some(f) => {
                let source = self.plan.copy_source(f, line)?;
                Some(self.source_fs(st.index, source, line)?)
            }
            None => None,
        };
        let files = self.expand_files(st, line, &c.files)?;
        let opts = CopyOptions {
            owner: self.chown(st, line, c.chown.as_deref())?,
            mode: self.chmod(st, line, c.chmod.as_deref())?,
            exclude: c.exclude.clone(),
            parents: c.parents,
            add: None,
        };
        self.copy_files(st, line, from, files, &opts)
    }

    pub(super) fn add(
        &mut self,
        st: &mut StageState,
        line: usize,
        a: &Add,
    ) -> Result<(), BuildError> {
        let files = self.expand_files(st, line, &a.files)?;
        if let Some(checksum) = &a.checksum {
            let checksum = self.expand(st, line, checksum)?;
            check_checksum(&checksum, &files.sources).map_err(|k| BuildError::at(line, k))?;
        }
        let opts = CopyOptions {
            owner: self.chown(st, line, a.chown.as_deref())?,
            mode: self.chmod(st, line, a.chmod.as_deref())?,
            exclude: a.exclude.clone(),
            parents: false,
            add: Some(a.unpack),
        };
        self.copy_files(st, line, None, files, &opts)
    }

    fn expand_files(
        &self,
        st: &StageState,
        line: usize,
        files: &Files,
    ) -> Result<ExpandedFiles, BuildError> {
        let sources = files
            .sources
            .iter()
            .map(|s| self.expand(st, line, s))
            .collect::<Result<_, _>>()?;
        // Heredoc bodies keep their quotes; `\` escapes whatever the escape directive says.
        let body_lex = Lex {
            skip_process_quotes: true,
            ..Lex::new('\\')
        };
        let inline = files
            .inline
            .iter()
            .map(|f| {
                let data = if f.expand {
                    expand_with(&body_lex, &st.env, line, &f.data)?
                } else {
                    f.data.clone()
                };
                Ok((f.name.clone(), data))
            })
            .collect::<Result<_, BuildError>>()?;
        Ok(ExpandedFiles {
            sources,
            inline,
            dest: self.expand(st, line, &files.dest)?,
        })
    }

    fn chown(
        &self,
        st: &StageState,
        line: usize,
        chown: Option<&str>,
    ) -> Result<Option<Owner>, BuildError> {
        let Some(chown) = chown else { return Ok(None) };
        let chown = self.expand(st, line, chown)?;
        parse_chown(&chown).map_err(|k| BuildError::at(line, k))
    }

    fn chmod(
        &self,
        st: &StageState,
        line: usize,
        chmod: Option<&str>,
    ) -> Result<Option<u32>, BuildError> {
        let Some(chmod) = chmod else { return Ok(None) };
        let chmod = self.expand(st, line, chmod)?;
        parse_chmod(&chmod).map_err(|k| BuildError::at(line, k))
    }

    /// Copies every source (from `from`, or the context) and heredoc file onto the stage.
    fn copy_files(
        &mut self,
        st: &mut StageState,
        line: usize,
        from: Option<Fs>,
        files: ExpandedFiles,
        opts: &CopyOptions,
    ) -> Result<(), BuildError> {
        let at = |kind| BuildError::at(line, kind);
        // Several sources do not make a destination without `/` a directory: BuildKit copies
        // each onto it in turn.
        let dest = paths::relative_to_workdir(&st.config.working_dir, &files.dest);
        let is_add = opts.add.is_some();
        let mut fs = st.fs.clone();
        for src in &files.sources {
            fs = if is_git_source(src) {
                return Err(at(if is_add {
                    BuildErrorKind::Unsupported(format!("ADD of the git repository {src:?}"))
                } else {
                    BuildErrorKind::Invalid("source can't be a git ref for COPY".to_owned())
                }));
            } else if is_http_source(src) {
                if !is_add {
                    return Err(at(BuildErrorKind::Invalid(
                        "source can't be a URL for COPY".to_owned(),
                    )));
                }
                copy_url(&fs, src, &dest, opts).map_err(at)?
            } else {
                let from = match &from {
                    Some(f) => f.clone(),
                    None => self.context().map_err(at)?,
                };
                copy_local(&fs, &from, src, &dest, opts).map_err(at)?
            };
        }
        for (name, data) in &files.inline {
            let file = self.inline_file(name, data).map_err(at)?;
            let path = paths::join(&["/", name]);
            fs = copy_op(&fs, &file, |base, from| CopyOp {
                create_dest_path: true,
                ..plain_copy(base, from, path, dest.clone(), opts)
            })
            .map_err(at)?;
        }
        st.fs = fs;
        Ok(())
    }

    /// An empty filesystem with the file `/<name>` holding `data` (mode 0644).
    fn inline_file(&mut self, name: &str, data: &str) -> Result<Fs, BuildErrorKind> {
        let empty = self.empty()?;
        let mut inputs = Inputs::default();
        let base = inputs.add(&empty);
        let op = Op::MkFile(MkFileOp {
            base,
            path: paths::join(&["/", name]),
            contents: data.as_bytes().to_vec(),
            mode: 0o644,
            owner: None,
        });
        vertex(op, inputs)
    }
}

/// A copy op of `base` with files of `from`.
fn copy_op(
    base: &Fs,
    from: &Fs,
    make: impl FnOnce(InputRef, InputRef) -> CopyOp,
) -> Result<Fs, BuildErrorKind> {
    let mut inputs = Inputs::default();
    let b = inputs.add(base);
    let f = inputs.add(from);
    vertex(Op::Copy(make(b, f)), inputs)
}

/// A copy of `src` to `dest` with the owner, mode and excludes, all switches off.
fn plain_copy(
    base: InputRef,
    from: InputRef,
    src: String,
    dest: String,
    opts: &CopyOptions,
) -> CopyOp {
    CopyOp {
        base,
        from,
        src,
        dest,
        include: Vec::new(),
        exclude: Vec::new(),
        owner: opts.owner,
        mode: opts.mode,
        copy_dir_contents: false,
        create_dest_path: false,
        allow_wildcard: false,
        follow_symlinks: false,
        unpack_archive: false,
    }
}

/// A path of the source filesystem (or, with `--parents`, the pattern below its pivot).
fn copy_local(
    base: &Fs,
    from: &Fs,
    src: &str,
    dest: &str,
    opts: &CopyOptions,
) -> Result<Fs, BuildErrorKind> {
    let (src, include) = if opts.parents {
        let (root, pattern) = match src.split_once("/./") {
            Some((root, pattern)) => (root, pattern),
            None => ("/", src),
        };
        let pattern = paths::normalize("/", pattern, false);
        (
            paths::normalize("/", root, false),
            vec![pattern.trim_start_matches('/').to_owned()],
        )
    } else {
        (paths::normalize("/", src, false), Vec::new())
    };
    let unpack = matches!(opts.add, Some(unpack) if unpack.unwrap_or(true));
    copy_op(base, from, |b, f| CopyOp {
        include,
        exclude: opts.exclude.clone(),
        copy_dir_contents: true,
        create_dest_path: true,
        allow_wildcard: true,
        follow_symlinks: true,
        unpack_archive: unpack,
        ..plain_copy(b, f, src, dest.to_owned(), opts)
    })
}

/// ADD of a URL: the download (mode 0600 unless `--chmod`) copied to `dest`.
fn copy_url(base: &Fs, url: &str, dest: &str, opts: &CopyOptions) -> Result<Fs, BuildErrorKind> {
    let filename = url_filename(url);
    let download = vertex(
        Op::Http(HttpOp {
            url: url.to_owned(),
            filename: filename.clone(),
            mode: opts.mode.unwrap_or(0o600),
            owner: opts.owner,
            service_hostnames: Vec::new(),
        }),
        Inputs::default(),
    )?;
    let unpack = matches!(opts.add, Some(Some(true)));
    copy_op(base, &download, |b, f| CopyOp {
        exclude: opts.exclude.clone(),
        create_dest_path: true,
        unpack_archive: unpack,
        ..plain_copy(b, f, format!("/{filename}"), dest.to_owned(), opts)
    })
}

/// `ADD --checksum` is only for one HTTP(S) or git source, and not implemented for them.
fn check_checksum(checksum: &str, sources: &[String]) -> Result<(), BuildErrorKind> {
    let [src] = sources else {
        return Err(BuildErrorKind::Invalid(
            "checksum can't be specified for multiple sources".to_owned(),
        ));
    };
    if !is_http_source(src) && !is_git_source(src) {
        return Err(BuildErrorKind::Invalid(
            "checksum requires HTTP(S) or Git sources".to_owned(),
        ));
    }
    Err(BuildErrorKind::Unsupported(format!(
        "ADD --checksum={checksum} (download verification)"
    )))
}

/// `--chown`: numeric `uid[:gid]`, `root` standing for 0.
fn parse_chown(text: &str) -> Result<Option<Owner>, BuildErrorKind> {
    Owner::parse(&map_root(text)).map_err(|_| BuildErrorKind::OwnerName(text.to_owned()))
}

/// `--chmod`: an octal mode up to 07777.
fn parse_chmod(text: &str) -> Result<Option<u32>, BuildErrorKind> {
    if text.is_empty() {
        return Ok(None);
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BuildErrorKind::Unsupported(format!(
            "the symbolic --chmod={text} (only octal modes)"
        )));
    }
    match u32::from_str_radix(text, 8) {
        Ok(mode) if mode <= 0o7777 => Ok(Some(mode)),
        _ => Err(BuildErrorKind::Invalid(format!(
            "invalid chmod parameter: '{text}'. it should be octal string and between 0 and 07777"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chown_and_chmod_values() {
        let owner = |uid, gid| Some(Some(Owner { uid, gid }));
        assert_eq!(parse_chown("1000:1001").ok(), owner(1000, 1001));
        assert_eq!(parse_chown("7").ok(), owner(7, 7));
        assert_eq!(parse_chown("root").ok(), owner(0, 0));
        assert_eq!(parse_chown("root:1000").ok(), owner(0, 1000));
        assert_eq!(
            parse_chown("app:app").map_err(|e| e.to_string()),
            Err("--chown=app:app: only numeric uid[:gid] (or root) is supported; names would need the image's /etc/passwd".to_owned())
        );
        assert_eq!(parse_chmod("755").ok(), Some(Some(0o755)));
        assert_eq!(parse_chmod("0644").ok(), Some(Some(0o644)));
        assert!(parse_chmod("79").is_err());
        assert!(parse_chmod("17777").is_err());
        assert!(matches!(
            parse_chmod("u+x"),
            Err(BuildErrorKind::Unsupported(_))
        ));
    }
}
