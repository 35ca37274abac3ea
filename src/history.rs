//! `plinth history`: a workflow's history from Temporal while it keeps it, else from the
//! history export, payloads decrypted by the codec server; both check that the caller may read
//! the namespace.

use std::process::ExitCode;

use anyhow::{Context, bail};
use futures::future::BoxFuture;
use plinth_proto::v1::{GetHistoryRequest, ListHistoriesRequest};
use prost::Message as _;
use temporalio_common::data_converters::PayloadConversionError;
use temporalio_common::payload_visitor::{
    AsyncPayloadVisitor, PayloadField, PayloadFieldData, PayloadVisitable,
};
use temporalio_common::protos::temporal::api::common::v1::{Payload, Payloads};
use temporalio_common::protos::temporal::api::history::v1::History;

use crate::client::{ClientCredentials, Output, print_rows, since, status_error};
use crate::config::Config;
use crate::home::Home;

/// The largest answer read: a history of Temporal's 50 MB limit, and room.
const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// Bytes of payloads sent to the codec server in one request.
const DECODE_BATCH_BYTES: usize = 1 << 20;

/// `plinth history`.
#[derive(Debug, clap::Subcommand)]
pub enum HistoryCommand {
    /// What the history export holds for a namespace.
    List(ListArgs),
    /// One workflow's history, decrypted, as `temporal workflow show -o json` prints it.
    Get(GetArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// The Temporal namespace (spec.name).
    namespace: String,
    /// Workflows closed since this long ago (e.g. 2h, 7d), or since an RFC 3339 time.
    #[arg(long, default_value = "24h")]
    since: String,
    /// Workflows closed before this RFC 3339 time (default: now).
    #[arg(long)]
    until: Option<String>,
    /// Only this workflow id.
    #[arg(long)]
    workflow_id: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 100)]
    limit: u32,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// The Temporal namespace (spec.name).
    namespace: String,
    /// The workflow id.
    workflow_id: String,
    /// The run (default: the latest).
    #[arg(long)]
    run_id: Option<String>,
    /// Search the export from this long ago (e.g. 30d), or from an RFC 3339 time (default:
    /// 400 days).
    #[arg(long)]
    since: Option<String>,
}

/// Runs a `plinth history` command.
pub async fn run(
    config: &Config,
    home: &Home,
    command: &HistoryCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        HistoryCommand::List(args) => list(config, home, args).await,
        HistoryCommand::Get(args) => get(config, home, args).await,
    }
}

async fn list(config: &Config, home: &Home, args: &ListArgs) -> anyhow::Result<ExitCode> {
    let mut api = crate::client::connect(config, home).await?;
    let answer = api
        .list_histories(ListHistoriesRequest {
            namespace: args.namespace.clone(),
            since: since(&args.since)?,
            until: args.until.clone().unwrap_or_default(),
            workflow_id: args.workflow_id.clone().unwrap_or_default(),
            limit: args.limit,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&answer.workflows)?),
        Output::Yaml => println!("{}", serde_yaml::to_string(&answer.workflows)?.trim_end()),
        Output::Table => {
            let rows = answer
                .workflows
                .iter()
                .map(|w| {
                    vec![
                        w.workflow_id.clone(),
                        w.run_id.clone(),
                        w.workflow_type.clone(),
                        w.close_time.clone(),
                        w.status.clone(),
                    ]
                })
                .collect();
            print_rows(&["WORKFLOW ID", "RUN ID", "TYPE", "CLOSED", "STATUS"], rows);
        }
    }
    if answer.truncated {
        eprintln!("more workflows match: narrow the range, or raise --limit");
    }
    Ok(ExitCode::SUCCESS)
}

async fn get(config: &Config, home: &Home, args: &GetArgs) -> anyhow::Result<ExitCode> {
    let mut api = crate::client::connect(config, home)
        .await?
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let answer = api
        .get_history(GetHistoryRequest {
            namespace: args.namespace.clone(),
            workflow_id: args.workflow_id.clone(),
            run_id: args.run_id.clone().unwrap_or_default(),
            since: args
                .since
                .as_deref()
                .map(since)
                .transpose()?
                .unwrap_or_default(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let mut history =
        History::decode(answer.history.as_slice()).context("the history does not decode")?;
    Codec::new(config, home, &answer.temporal_namespace)?
        .decode(&mut history)
        .await?;
    match answer.workflow {
        Some(found) => eprintln!("from the history export ({})", found.key),
        None => eprintln!("from Temporal (still retained)"),
    }
    println!("{}", protojson(&history)?);
    Ok(ExitCode::SUCCESS)
}

/// The codec server (`[client] codec`, else the running `plinth dev`'s), called with the
/// client certificate.
struct Codec {
    url: String,
    http: reqwest::Client,
    namespace: String,
}

impl Codec {
    fn new(config: &Config, home: &Home, namespace: &str) -> anyhow::Result<Self> {
        let url = config
            .client
            .codec
            .clone()
            .or_else(|| crate::profile::dev_codec(home))
            .context("no codec server to decrypt with: set [client] codec in plinth.toml")?;
        // Decrypted payloads come back: plain HTTP only to this host (plinth dev's).
        let parsed = url::Url::parse(&url).context("[client] codec: not a URL")?;
        let loopback = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(name)) => name == "localhost",
            None => false,
        };
        if parsed.scheme() != "https" && !loopback {
            bail!(
                "[client] codec: {url} would carry decrypted payloads in the clear: use https://"
            );
        }
        let credentials = ClientCredentials::load(config, home)?;
        let mut identity = credentials.cert.clone();
        identity.extend_from_slice(&credentials.key);
        let http = reqwest::Client::builder()
            .tls_backend_rustls()
            .add_root_certificate(reqwest::Certificate::from_pem(&credentials.ca)?)
            .identity(reqwest::Identity::from_pem(&identity)?)
            .build()
            .context("codec client")?;
        Ok(Self {
            url: url.trim_end_matches('/').to_owned(),
            http,
            namespace: namespace.to_owned(),
        })
    }

    /// Replaces every payload of `history` with what the codec server decodes it to.
    async fn decode(&self, history: &mut History) -> anyhow::Result<()> {
        let mut taken = Take::default();
        history
            .visit_payloads_mut(&mut taken)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut decoded = Vec::with_capacity(taken.payloads.len());
        let mut batch = Vec::new();
        let mut bytes = 0;
        for payload in taken.payloads {
            bytes += payload.encoded_len();
            batch.push(payload);
            if bytes >= DECODE_BATCH_BYTES {
                decoded.extend(self.post(std::mem::take(&mut batch)).await?);
                bytes = 0;
            }
        }
        if !batch.is_empty() {
            decoded.extend(self.post(batch).await?);
        }
        let mut put = Put(decoded.into_iter());
        history
            .visit_payloads_mut(&mut put)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    async fn post(&self, payloads: Vec<Payload>) -> anyhow::Result<Vec<Payload>> {
        let count = payloads.len();
        let body = serde_json::to_vec(&Payloads { payloads })?;
        let response = self
            .http
            .post(format!("{}/decode", self.url))
            .header("Content-Type", "application/json")
            .header("X-Namespace", &self.namespace)
            .body(body)
            .send()
            .await
            .with_context(|| format!("cannot reach the codec server at {}", self.url))?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!(
                "the codec server refused to decode ({status}): {}",
                text.trim()
            );
        }
        let decoded: Payloads = serde_json::from_str(&text).context("the codec server's answer")?;
        if decoded.payloads.len() != count {
            bail!(
                "the codec server answered {} payloads for {count}",
                decoded.payloads.len()
            );
        }
        Ok(decoded.payloads)
    }
}

/// The payloads of `field` the proxy encrypts: all but search attributes, which stay readable
/// to Temporal, which indexes them.
fn encrypted(field: PayloadField<'_>) -> Vec<&mut Payload> {
    if field.path.contains("SearchAttributes.indexed_fields") {
        return Vec::new();
    }
    match field.data {
        PayloadFieldData::Single(payload) => vec![payload],
        PayloadFieldData::Repeated(payloads) => payloads.iter_mut().collect(),
        PayloadFieldData::Payloads(payloads) => payloads.payloads.iter_mut().collect(),
    }
}

/// Takes every payload out, in the order visited.
#[derive(Default)]
struct Take {
    payloads: Vec<Payload>,
}

impl AsyncPayloadVisitor for Take {
    fn visit<'a>(
        &'a mut self,
        field: PayloadField<'a>,
    ) -> BoxFuture<'a, Result<(), PayloadConversionError>> {
        let taken = encrypted(field).into_iter().map(|payload| payload.clone());
        self.payloads.extend(taken);
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Puts payloads back in the order [`Take`] took them.
struct Put(std::vec::IntoIter<Payload>);

impl AsyncPayloadVisitor for Put {
    fn visit<'a>(
        &'a mut self,
        field: PayloadField<'a>,
    ) -> BoxFuture<'a, Result<(), PayloadConversionError>> {
        let mut put = Ok(());
        for payload in encrypted(field) {
            match self.0.next() {
                Some(decoded) => *payload = decoded,
                None => put = Err(PayloadConversionError::WrongEncoding),
            }
        }
        Box::pin(std::future::ready(put))
    }
}

/// `history` in proto3 JSON, as Temporal's CLI prints histories.
fn protojson(history: &History) -> anyhow::Result<String> {
    let pool = prost_reflect::DescriptorPool::decode(plinth_proxy::temporal_descriptors())
        .context("the built-in Temporal descriptors")?;
    let descriptor = pool
        .get_message_by_name("temporal.api.history.v1.History")
        .context("temporal.api.history.v1.History")?;
    let message =
        prost_reflect::DynamicMessage::decode(descriptor, history.encode_to_vec().as_slice())?;
    Ok(serde_json::to_string_pretty(&message)?)
}
