//! `plinth profile`: a `temporal.toml` profile for the proxy, which every Temporal SDK and the
//! `temporal` CLI read unchanged. This is what per-language factory libraries used to do.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::config::Config;
use crate::home::Home;

#[derive(Debug, clap::Args)]
pub struct ProfileArgs {
    /// The Temporal namespace the profile connects to.
    #[arg(long)]
    namespace: String,
    /// Whose certificate (default: the [dev] user).
    #[command(flatten)]
    who: crate::pki::Who,
    /// File to write; other profiles in it are kept (default: the SDKs' default,
    /// $XDG_CONFIG_HOME/temporalio/temporal.toml).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Profile name (default: the namespace).
    #[arg(long)]
    name: Option<String>,
    /// Codec server for tools that decode payloads themselves (default: the running
    /// `plinth dev`'s, else none). The proxy already answers in plaintext, and the CLI calls
    /// a codec server without credentials, so name one only where that is allowed.
    #[arg(long)]
    codec_endpoint: Option<String>,
}

/// Issues (or reuses, while it is not near expiry) the client certificate and writes the profile.
pub fn write(config: &Config, home: &Home, args: &ProfileArgs) -> anyhow::Result<ExitCode> {
    if args.namespace.trim().is_empty() {
        anyhow::bail!("--namespace must name a namespace");
    }
    let identity = args.who.identity(Some(&config.dev.user))?;
    let files = crate::pki::ensure_client(home, &config.pki, &identity)?;
    let (address, server_name) = crate::client::proxy_endpoint(config, home);
    let name = args.name.clone().unwrap_or_else(|| args.namespace.clone());
    let out = match &args.out {
        Some(out) => out.clone(),
        None => default_path()?,
    };
    let absolute = |path: &Path| -> anyhow::Result<String> {
        Ok(std::path::absolute(path)?.display().to_string())
    };
    let mut tls = toml::Table::new();
    tls.insert("client_cert_path".into(), absolute(&files.cert)?.into());
    tls.insert("client_key_path".into(), absolute(&files.key)?.into());
    tls.insert("server_ca_cert_path".into(), absolute(&files.ca)?.into());
    tls.insert("server_name".into(), server_name.into());
    let mut profile = toml::Table::new();
    profile.insert("address".into(), address.clone().into());
    profile.insert("namespace".into(), args.namespace.clone().into());
    profile.insert("tls".into(), tls.into());
    if let Some(endpoint) = args.codec_endpoint.clone().or_else(|| dev_codec(home)) {
        let mut codec = toml::Table::new();
        codec.insert("endpoint".into(), endpoint.into());
        profile.insert("codec".into(), codec.into());
    }

    let mut document = match std::fs::read_to_string(&out) {
        Ok(text) => text
            .parse::<toml::Table>()
            .with_context(|| format!("--out {}: not a TOML file", out.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
        Err(e) => return Err(e).with_context(|| format!("--out {}", out.display())),
    };
    let profiles = document
        .entry("profile")
        .or_insert_with(|| toml::Table::new().into())
        .as_table_mut()
        .with_context(|| format!("--out {}: `profile` is not a table", out.display()))?;
    profiles.insert(name.clone(), profile.into());
    if let Some(dir) = out.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    }
    std::fs::write(&out, toml::to_string(&document)?).with_context(|| out.display().to_string())?;
    println!(
        "profile {name:?} ({identity} on namespace {:?} through {address}) written to {}",
        args.namespace,
        out.display()
    );
    println!(
        "try: temporal workflow list --config-file {} --profile {name}",
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The running `plinth dev`'s codec server: local, and open to local callers.
pub(crate) fn dev_codec(home: &Home) -> Option<String> {
    home.running_dev()?["codec"]["url"]
        .as_str()
        .map(str::to_owned)
}

/// Where the SDKs look when no file is named.
fn default_path() -> anyhow::Result<PathBuf> {
    let config_dir = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(std::env::var_os("HOME").context("HOME is not set; use --out")?)
            .join(".config"),
    };
    Ok(config_dir.join("temporalio").join("temporal.toml"))
}
