//! `Query.http`: a file downloaded from a URL, as an [`Op::Http`] vertex. The worker downloads
//! it when solving, or revalidates its last download of the URL (`ETag`, `Last-Modified`), and
//! keys the result by the content's digest. As in Dagger, the file is named after the digest of
//! the URL and has mode 0600 (BuildKit's default for downloads). With `experimentalServiceHost`,
//! the service runs during the download and the URL may name it by its hostname.

use dagr_gql::{Arg, Args, Field, FieldError};
use dagr_solver::{HttpOp, Op, Vertex};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::state::{File, Fs, Service};
use crate::{caller, graph_err, obj, services};

#[derive(Deserialize)]
struct HttpArgs {
    url: String,
}

impl Args for HttpArgs {
    fn arguments() -> Vec<Arg> {
        vec![
            Arg::new("experimentalServiceHost", "ServiceID"),
            Arg::new("url", "String!"),
        ]
    }
}

/// The vertex of a download of `url`, written as `filename` with `mode`.
pub(crate) fn download(
    url: &str,
    filename: &str,
    mode: u32,
    owner: Option<dagr_solver::Owner>,
    service_hostnames: Vec<String>,
) -> Result<Fs, FieldError> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(FieldError::new(format!(
            "url {url:?} is not supported: want an http:// or https:// url"
        )));
    }
    let v = Vertex::new(
        Op::Http(HttpOp {
            url: url.to_owned(),
            filename: filename.to_owned(),
            mode,
            owner,
            service_hostnames,
        }),
        vec![],
    )
    .map_err(graph_err)?;
    Ok(Fs::main(v))
}

/// The hostname of the `experimentalServiceHost` argument (none when not given), defined for the
/// caller's session so the worker can start it.
pub(crate) fn service_host(ctx: &dagr_gql::ResolveCtx) -> Result<Vec<String>, FieldError> {
    let Ok(service) = ctx.loaded::<Service>("experimentalServiceHost") else {
        return Ok(Vec::new());
    };
    services(ctx)?
        .running
        .define(&caller(ctx)?.session_id, &service);
    Ok(vec![service.hostname.clone()])
}

/// `Query.http(url)`.
pub(crate) fn query_http() -> Field {
    Field::new("http", "File!")
        .args::<HttpArgs>()
        .resolve_sync(|ctx| {
            let HttpArgs { url } = ctx.args_as()?;
            let filename = hex::encode(Sha256::digest(url.as_bytes()));
            let fs = download(&url, &filename, 0o600, None, service_host(ctx)?)?;
            Ok(obj(
                "File",
                File {
                    fs,
                    path: format!("/{filename}"),
                },
            ))
        })
}
