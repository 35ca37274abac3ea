//! `plinth bench codec`: AES-256-GCM seal and open next to `openssl speed` on this machine,
//! the whole payload envelope, key provider calls per payload and their cost, and `/decode`
//! of the running `plinth dev` codec server against an empty request on the same server.

use std::collections::HashMap;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use plinth_codec::{
    Aead, Codec, CodecSettings, CountingProvider, KekProvider, KeyRing, Payload, payloads_to_json,
    wrap_aad,
};
use tokio::task::JoinSet;

use crate::config::{Config, KeyProviderKind};
use crate::home::Home;

#[derive(Debug, clap::Args)]
pub struct CodecBenchArgs {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 2)]
    seconds: u64,
    /// Concurrent connections to the codec server.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Only the key provider table (no cipher table, no running `plinth dev` needed).
    #[arg(long)]
    providers_only: bool,
}

/// Payloads of the provider table, over this many namespaces.
const PROVIDER_PAYLOADS: usize = 10_000;
const PROVIDER_NAMESPACES: usize = 10;
/// Timed wraps and unwraps per provider.
const PROVIDER_SAMPLES: usize = 200;

/// Provider calls per 10,000 payloads (sealed by one codec, opened by another with a cold
/// cache, as after a restart) and what one call costs, for the file ring and the PKCS#11
/// token or AWS KMS when `[keys]` names one. The file ring is the baseline.
fn providers(config: &Config) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (ring, _) = KeyRing::init(&dir.path().join("keyring.json"))?;
    let mut providers: Vec<(&str, Arc<dyn KekProvider>)> = vec![("file", Arc::new(ring))];
    match config.keys.provider {
        KeyProviderKind::File => {}
        KeyProviderKind::Pkcs11 => {
            providers.push(("pkcs11", Arc::new(crate::codec::pkcs11(config)?)));
        }
        KeyProviderKind::AwsKms => {
            providers.push(("aws-kms", Arc::new(crate::codec::aws_kms(config)?)));
        }
    }
    println!(
        "\nkey providers: {PROVIDER_PAYLOADS} payloads over {PROVIDER_NAMESPACES} namespaces, \
         {PROVIDER_SAMPLES} timed calls each\n"
    );
    println!(
        "{:<8} {:>16} {:>12} {:>12} {:>22}",
        "provider", "calls/10k", "wrap p50", "unwrap p50", "added p50/call vs file"
    );
    let mut baseline = None;
    for (name, provider) in providers {
        let counted = Arc::new(CountingProvider::new(provider.clone()));
        let sealer = Codec::new(counted.clone(), CodecSettings::default());
        let opener = Codec::new(counted.clone(), CodecSettings::default());
        for n in 0..PROVIDER_NAMESPACES {
            let namespace = format!("bench-{n}");
            let payloads = (0..PROVIDER_PAYLOADS / PROVIDER_NAMESPACES)
                .map(|i| Payload {
                    data: i.to_le_bytes().to_vec(),
                    ..Default::default()
                })
                .collect();
            let sealed = sealer.encode(&namespace, payloads)?;
            opener.decode(&namespace, sealed)?;
        }
        let (wraps, unwraps) = counted.calls();
        let kek = provider.active_kek()?;
        let aad = wrap_aad("bench", &kek);
        let (mut wrap, mut unwrap) = (Vec::new(), Vec::new());
        for _ in 0..PROVIDER_SAMPLES {
            let started = Instant::now();
            let wrapped = provider.wrap(&kek, &[7; plinth_codec::KEY_BYTES], &aad)?;
            wrap.push(started.elapsed());
            let started = Instant::now();
            provider.unwrap(&kek, &wrapped, &aad)?;
            unwrap.push(started.elapsed());
        }
        wrap.sort();
        unwrap.sort();
        let (wrap, unwrap) = (super::percentile(&wrap, 50), super::percentile(&unwrap, 50));
        let per_call = (wrap + unwrap) / 2;
        let baseline = *baseline.get_or_insert(per_call);
        println!(
            "{:<8} {:>16} {:>12} {:>12} {:>22}",
            name,
            format!("{} ({wraps} + {unwraps})", wraps + unwraps),
            micros(wrap),
            micros(unwrap),
            format!("+{}", micros(per_call.saturating_sub(baseline))),
        );
    }
    println!("\n(calls: wraps + unwraps; payloads reuse their namespace's data key)");
    Ok(())
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

const SIZES: [usize; 2] = [1024, 16 * 1024];

pub async fn codec(
    config: &Config,
    home: &Home,
    args: &CodecBenchArgs,
) -> anyhow::Result<ExitCode> {
    if args.providers_only {
        providers(config)?;
        return Ok(ExitCode::SUCCESS);
    }
    let window = Duration::from_secs(args.seconds);
    println!("AES-256-GCM, one core, {} s per cell\n", args.seconds);
    println!(
        "{:<10} {:>14} {:>14} {:>14} {:>14} {:>10} {:>10}",
        "size", "openssl seal", "plinth seal", "plinth open", "envelope", "seal/ossl", "open/ossl"
    );
    let dir = tempfile::tempdir()?;
    let (ring, _) = KeyRing::init(&dir.path().join("keyring.json"))?;
    let codec = Codec::new(Arc::new(ring), CodecSettings::default());
    let aead = Aead::new(&[7u8; plinth_codec::KEY_BYTES])?;
    for size in SIZES {
        let openssl = openssl_speed(size, args.seconds)?;
        let plaintext = vec![0x5a; size];
        let sealed = aead.seal(&plaintext, b"aad")?;
        let seal = throughput(size, window, || aead.seal(&plaintext, b"aad").map(drop))?;
        let open = throughput(size, window, || {
            aead.open(&sealed, b"aad", "bench").map(drop)
        })?;
        let payload = Payload {
            data: plaintext.clone(),
            ..Default::default()
        };
        // Seal and open of a whole Payload: protobuf, data key, metadata, compression check.
        let envelope = throughput(size, window, || {
            let sealed = codec.encode_payload("bench", payload.clone())?;
            codec.decode_payload("bench", sealed).map(drop)
        })?;
        println!(
            "{:<10} {:>14} {:>14} {:>14} {:>14} {:>9.0}% {:>9.0}%",
            format!("{} KiB", size / 1024),
            mbps(openssl),
            mbps(seal),
            mbps(open),
            mbps(envelope),
            100.0 * seal / openssl,
            100.0 * open / openssl,
        );
    }
    println!("\n(envelope = seal and open of one Payload, so it does twice the work per byte)");
    providers(config)?;

    let url = super::dev_text(&super::running_dev(home)?, "codec", "url")?;
    let address = url.trim_start_matches("http://").to_owned();
    let payloads: Vec<Payload> = (0..100)
        .map(|i| Payload {
            metadata: HashMap::from([("encoding".into(), b"json/plain".to_vec())]),
            data: vec![b'a' + (i % 26) as u8; 1024],
            ..Default::default()
        })
        .collect();
    let encoded = post(
        &address,
        "/plinth-system/encode",
        payloads_to_json(&payloads),
    )
    .await?;
    let empty = br#"{"payloads":[]}"#.to_vec();
    let baseline = load(&address, empty, args.connections, window).await?;
    let decode = load(&address, encoded, args.connections, window).await?;
    println!(
        "\n/decode on {url}, {} connections, {} s\n",
        args.connections, args.seconds
    );
    println!(
        "{:<26} {:>10} {:>10} {:>12} {:>14}",
        "", "p50", "p99", "requests/s", "payloads/s"
    );
    for (label, run, per_request) in [
        ("empty request (baseline)", &baseline, 0),
        ("100 x 1 KiB payloads", &decode, 100),
    ] {
        println!(
            "{:<26} {:>10} {:>10} {:>12.0} {:>14.0}",
            label,
            format!("{:.2} ms", run.p50.as_secs_f64() * 1e3),
            format!("{:.2} ms", run.p99.as_secs_f64() * 1e3),
            run.rate,
            run.rate * per_request as f64,
        );
    }
    println!(
        "\nratio (100 payloads / empty): p50 {:.1}x, requests/s {:.2}x",
        decode.p50.as_secs_f64() / baseline.p50.as_secs_f64().max(1e-9),
        decode.rate / baseline.rate.max(1e-9)
    );
    Ok(ExitCode::SUCCESS)
}

/// Bytes per second of `work` on `size`-byte inputs, run for `window`.
fn throughput(
    size: usize,
    window: Duration,
    mut work: impl FnMut() -> Result<(), plinth_codec::CodecError>,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut done = 0u64;
    while started.elapsed() < window {
        for _ in 0..64 {
            work()?;
        }
        done += 64;
    }
    Ok(done as f64 * size as f64 / started.elapsed().as_secs_f64())
}

/// `openssl speed -evp aes-256-gcm` at `size` bytes, bytes per second.
fn openssl_speed(size: usize, seconds: u64) -> anyhow::Result<f64> {
    let output = Command::new("openssl")
        .args([
            "speed",
            "-evp",
            "aes-256-gcm",
            "-seconds",
            &seconds.to_string(),
        ])
        .args(["-bytes", &size.to_string()])
        .output()
        .context("run openssl speed")?;
    let text = String::from_utf8_lossy(&output.stdout);
    // Last line: `AES-256-GCM  822297.60k` (thousands of bytes per second).
    let value = text
        .lines()
        .last()
        .and_then(|line| line.split_whitespace().last())
        .and_then(|v| v.trim_end_matches('k').parse::<f64>().ok());
    match value {
        Some(k) => Ok(k * 1000.0),
        None => bail!("unexpected openssl speed output: {text}"),
    }
}

fn mbps(bytes_per_second: f64) -> String {
    format!("{:.0} MB/s", bytes_per_second / 1e6)
}

/// `connections` clients posting `body` to `/plinth-system/decode` back to back.
async fn load(
    address: &str,
    body: Vec<u8>,
    connections: usize,
    window: Duration,
) -> anyhow::Result<super::Load> {
    let body = Bytes::from(body);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..connections {
        let (address, body) = (address.to_owned(), body.clone());
        tasks.spawn(async move {
            let mut sender = connect(&address).await?;
            let mut latencies = Vec::new();
            while started.elapsed() < window {
                let begin = Instant::now();
                let request = request(&address, "/plinth-system/decode", body.clone())?;
                let response = sender.send_request(request).await?;
                let status = response.status();
                response.into_body().collect().await?;
                if !status.is_success() {
                    bail!("/decode answered {status}");
                }
                latencies.push(begin.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        });
    }
    super::gather(tasks, started).await
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(address: &str) -> anyhow::Result<Sender> {
    let tcp = tokio::net::TcpStream::connect(address).await?;
    tcp.set_nodelay(true)?;
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

fn request(address: &str, path: &str, body: Bytes) -> anyhow::Result<hyper::Request<Full<Bytes>>> {
    Ok(hyper::Request::post(path)
        .header(hyper::header::HOST, address)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))?)
}

async fn post(address: &str, path: &str, body: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    send(address, request(address, path, Bytes::from(body))?).await
}

/// GETs `path` of `address`; the body of a success.
pub(super) async fn get(address: &str, path: &str) -> anyhow::Result<Vec<u8>> {
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, address)
        .body(Full::new(Bytes::new()))?;
    send(address, request).await
}

async fn send(address: &str, request: hyper::Request<Full<Bytes>>) -> anyhow::Result<Vec<u8>> {
    let path = request.uri().path().to_owned();
    let mut sender = connect(address).await?;
    let response = sender.send_request(request).await?;
    if !response.status().is_success() {
        bail!("{path} answered {}", response.status());
    }
    Ok(response.into_body().collect().await?.to_bytes().to_vec())
}
