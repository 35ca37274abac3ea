//! A real S3-compatible server: `s3s-fs` (crates.io), which serves the S3 REST API with
//! SigV4-checked requests over a directory, one bucket a subdirectory. It runs in the test
//! process on its own thread and runtime; Plinth's processes reach it over loopback HTTP.
//! `boto3`, AWS's own SDK for Python, reads back what Plinth wrote.

use std::path::Path;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

use crate::run_boto3;

/// The region and made-up credentials every client of the server uses.
const REGION: &str = "us-east-1";
const ACCESS_KEY: &str = "AKIAPLINTHS3TEST";
const SECRET_KEY: &str = "plinth-s3-test-secret";

/// A running S3 server; stopped when dropped.
#[derive(Debug)]
pub struct S3Server {
    dir: tempfile::TempDir,
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl S3Server {
    /// Starts it on a free port with bucket `bucket`.
    pub fn start(bucket: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("s3-server-").tempdir()?;
        std::fs::create_dir(dir.path().join(bucket))?;
        let fs = s3s_fs::FileSystem::new(dir.path())
            .map_err(|e| anyhow::anyhow!("s3s-fs over the directory: {e:?}"))?;
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("s3-server".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the S3 server");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                    loop {
                        let socket = tokio::select! {
                            accepted = listener.accept() => match accepted {
                                Ok((socket, _)) => socket,
                                Err(_) => continue,
                            },
                            _ = &mut stopped => return,
                        };
                        let service = service.clone();
                        tokio::spawn(async move {
                            let _ = Builder::new(TokioExecutor::new())
                                .serve_connection(TokioIo::new(socket), service)
                                .await;
                        });
                    }
                });
            })?;
        Ok(Self {
            dir,
            port,
            stop: Some(stop),
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The directory the buckets are in.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// What a process needs to reach it as S3: credentials, region, endpoint, and plain HTTP
    /// allowed (it is on loopback).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", REGION.into()),
            ("AWS_ENDPOINT", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// Runs `script` with `s3`, a boto3 client of this server, in scope; returns what it
    /// printed.
    pub fn boto3(&self, script: &str) -> anyhow::Result<String> {
        let client = format!(
            "s3 = boto3.client('s3', endpoint_url={:?}, region_name={REGION:?}, \
             aws_access_key_id={ACCESS_KEY:?}, aws_secret_access_key={SECRET_KEY:?})",
            self.endpoint()
        );
        run_boto3(&client, script)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
