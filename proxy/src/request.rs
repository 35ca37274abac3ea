//! Reading a unary call's request under limits: its frame's declared length is checked on the
//! first five bytes, the bytes it may occupy are reserved from its connection's and the
//! proxy's budgets before they are read, and its first bytes can be read for the namespace
//! before the rest arrives.

use std::io::Read as _;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use tonic::codegen::http::HeaderValue;

use crate::frame::{FrameError, HEADER_BYTES, declared_length, frame, unframe};
use crate::metrics::ProxyMetrics;
use crate::rpc::Rpc;

/// Bytes a compressed request is assumed to grow to, per byte, until it is decompressed:
/// deflate's greatest ratio.
const DEFLATE_RATIO: usize = 1032;
/// How much of a request is read before the rest to find its namespace.
const PEEK_BYTES: usize = 1024;
/// Budgets are counted in KiB, so that a permit count fits in `u32`.
const UNIT: usize = 1024;

/// The bytes of requests the proxy may hold at once while it reads, decompresses and seals
/// them: per connection and in total.
#[derive(Debug)]
pub struct Budgets {
    total: Arc<Semaphore>,
    per_connection: usize,
}

impl Budgets {
    /// `total` bytes for all connections, `per_connection` for each.
    pub fn new(total: usize, per_connection: usize) -> Self {
        Self {
            total: Arc::new(Semaphore::new(units(total) as usize)),
            per_connection,
        }
    }

    /// A new connection's budget.
    pub(crate) fn connection(&self) -> ConnectionBudget {
        ConnectionBudget(Arc::new(
            Semaphore::new(units(self.per_connection) as usize),
        ))
    }
}

/// One connection's budget, which each of its calls spends.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionBudget(Arc<Semaphore>);

fn units(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX)
}

/// A request's one message, and the body it came in.
pub(crate) struct Message {
    /// Uncompressed.
    pub message: Bytes,
    /// As it goes upstream: the original body when it was uncompressed.
    pub body: Bytes,
    /// What it holds of the budgets, until the call has been sealed.
    pub reserved: Reserved,
}

/// Budget held by a request being read, given back when the last clone drops: work on the
/// blocking pool holds a clone, so a client that resets its call does not get the budget back
/// while its message is still being decompressed or sealed.
#[derive(Clone)]
pub(crate) struct Reserved {
    _permits: Arc<Vec<OwnedSemaphorePermit>>,
}

/// A request body being read.
pub(crate) struct RequestBody<'a, B> {
    method: &'a str,
    metrics: &'a ProxyMetrics,
    body: Pin<Box<B>>,
    received: BytesMut,
    ended: bool,
    max: usize,
    /// When the whole body must have arrived: a slow client holds its reservation no longer.
    deadline: tokio::time::Instant,
    reserved: Option<Reserved>,
}

impl<'a, B> RequestBody<'a, B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<tonic::codegen::StdError>,
{
    /// A body of at most `max` bytes, before and after decompression, of a call to `method`,
    /// to arrive whole within `timeout`.
    pub(crate) fn new(
        method: &'a str,
        body: B,
        max: usize,
        timeout: std::time::Duration,
        metrics: &'a ProxyMetrics,
    ) -> Self {
        Self {
            deadline: tokio::time::Instant::now() + timeout,
            method,
            metrics,
            body: Box::pin(body),
            received: BytesMut::new(),
            ended: false,
            max,
            reserved: None,
        }
    }

    fn refuse(&self, e: FrameError) -> Status {
        let message = format!("{}: {e}", self.method);
        match e {
            FrameError::TooLarge(_) => {
                self.metrics.limited("message_size");
                Status::resource_exhausted(message)
            }
            FrameError::Encoding(_) => Status::unimplemented(message),
            _ => Status::invalid_argument(message),
        }
    }

    /// Reads until `until` bytes are here or the body ends; refuses a frame declared over the
    /// limit as soon as its header is here.
    async fn read_until(&mut self, until: usize) -> Result<(), Status> {
        while !self.ended && self.received.len() < until {
            let Some(frame) = self.next_frame().await? else {
                self.ended = true;
                break;
            };
            let frame = frame.map_err(|e| {
                let e: tonic::codegen::StdError = e.into();
                Status::cancelled(format!(
                    "{}: the request was not received whole: {e}",
                    self.method
                ))
            })?;
            if let Ok(data) = frame.into_data() {
                self.received.extend_from_slice(&data);
            }
            if self.received.len() < HEADER_BYTES {
                continue;
            }
            // Nothing past what the header declared, and so reserved, is held.
            let declared = declared_length(&self.received);
            if declared > self.max {
                return Err(self.refuse(FrameError::TooLarge(self.max)));
            }
            if self.received.len() > HEADER_BYTES + declared {
                return Err(self.refuse(FrameError::Trailing));
            }
        }
        Ok(())
    }

    /// The next frame of the body, unless its time is up.
    async fn next_frame(
        &mut self,
    ) -> Result<Option<Result<http_body::Frame<Bytes>, B::Error>>, Status> {
        tokio::time::timeout_at(self.deadline, self.body.frame())
            .await
            .map_err(|_| {
                self.metrics.limited("body_time");
                Status::deadline_exceeded(format!(
                    "{}: the request did not arrive whole within [proxy] request_body_timeout",
                    self.method
                ))
            })
    }

    /// Reads the frame header, and reserves from `budgets` and `connection` what the whole
    /// message may take, or refuses it.
    pub(crate) async fn head(
        &mut self,
        budgets: &Budgets,
        connection: Option<&ConnectionBudget>,
    ) -> Result<(), Status> {
        self.read_until(HEADER_BYTES).await?;
        if self.received.len() < HEADER_BYTES {
            return Ok(());
        }
        let declared = declared_length(&self.received);
        let compressed = self.received[0] != 0;
        let grown = if compressed {
            declared.saturating_mul(DEFLATE_RATIO).min(self.max)
        } else {
            0
        };
        let need = units(HEADER_BYTES + declared + grown);
        let mut permits = Vec::with_capacity(2);
        for (semaphore, limit, setting) in [
            (
                connection.map(|budget| &budget.0),
                "connection_bytes",
                "max_buffered_bytes_per_connection",
            ),
            (Some(&budgets.total), "total_bytes", "max_buffered_bytes"),
        ] {
            let Some(semaphore) = semaphore else { continue };
            match semaphore.clone().try_acquire_many_owned(need) {
                Ok(permit) => permits.push(permit),
                Err(_) => {
                    self.metrics.limited(limit);
                    return Err(Status::resource_exhausted(format!(
                        "{}: the proxy holds as many request bytes as [proxy] {setting} allows; \
                         try again",
                        self.method
                    )));
                }
            }
        }
        self.reserved = Some(Reserved {
            _permits: Arc::new(permits),
        });
        Ok(())
    }

    /// Reads the message's first bytes, and returns the namespace they name where `rpc` says
    /// which field holds it and the field is among them. The whole message may name another
    /// later: the caller compares.
    pub(crate) async fn peek_namespace(
        &mut self,
        rpc: &Rpc,
        encoding: Option<&HeaderValue>,
    ) -> Result<Option<String>, Status> {
        self.read_until(HEADER_BYTES + PEEK_BYTES).await?;
        Ok(self.namespace_in_prefix(rpc, encoding))
    }

    fn namespace_in_prefix(&self, rpc: &Rpc, encoding: Option<&HeaderValue>) -> Option<String> {
        let message = self.received.get(HEADER_BYTES..)?;
        if self.received[0] == 0 {
            return rpc.namespace_in_prefix(message);
        }
        if encoding.map(HeaderValue::as_bytes) != Some(b"gzip") {
            return None;
        }
        // As much of the start as the compressed bytes here give.
        let mut start = Vec::with_capacity(PEEK_BYTES);
        let mut decoder = flate2::read::GzDecoder::new(message).take(PEEK_BYTES as u64);
        let mut chunk = [0; 256];
        while let Ok(n @ 1..) = decoder.read(&mut chunk) {
            start.extend_from_slice(&chunk[..n]);
        }
        rpc.namespace_in_prefix(&start)
    }

    /// Reads the rest and unframes the message, decompressing it off the serving thread when
    /// it is large.
    pub(crate) async fn finish(
        mut self,
        encoding: Option<&HeaderValue>,
    ) -> Result<Message, Status> {
        self.read_until(usize::MAX).await?;
        let body = std::mem::take(&mut self.received).freeze();
        let reserved = self.reserved.take().unwrap_or(Reserved {
            _permits: Arc::new(Vec::new()),
        });
        // A compressed message is as much work as what it may grow to.
        let work = match body.first() {
            Some(0) | None => body.len(),
            Some(_) => body.len().saturating_mul(DEFLATE_RATIO).min(self.max),
        };
        let unframed = {
            let (body, encoding, max) = (body.clone(), encoding.cloned(), self.max);
            let held = reserved.clone();
            crate::forward::off_thread(work, move || {
                let _held = held;
                unframe(&body, encoding.as_ref(), max)
            })
            .await
        };
        match unframed.map_err(|e| self.refuse(e))? {
            Some((message, false)) => Ok(Message {
                message,
                body,
                reserved,
            }),
            Some((message, true)) => Ok(Message {
                body: frame(&message),
                message,
                reserved,
            }),
            None => Err(self.refuse(FrameError::Truncated(0))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Frame;
    use http_body_util::StreamBody;
    use std::convert::Infallible;
    use std::io::Write as _;

    /// A body that sends `first` and then never ends, as a slow client's would.
    fn never_ending(first: Vec<u8>) -> impl http_body::Body<Data = Bytes, Error = Infallible> {
        let first = futures::stream::iter([Ok::<_, Infallible>(Frame::data(Bytes::from(first)))]);
        StreamBody::new(futures::StreamExt::chain(first, futures::stream::pending()))
    }

    fn header(compressed: bool, declared: u32) -> Vec<u8> {
        let mut head = vec![u8::from(compressed)];
        head.extend_from_slice(&declared.to_be_bytes());
        head
    }

    /// A call to `Start` of at most 4 MiB whose body is `body`, with a minute to arrive.
    fn start_body<B>(body: B, metrics: &ProxyMetrics) -> RequestBody<'_, B>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<tonic::codegen::StdError>,
    {
        RequestBody::new(
            "Start",
            body,
            4 << 20,
            std::time::Duration::from_secs(60),
            metrics,
        )
    }

    fn start_rpc() -> &'static Rpc {
        Rpc::at("/temporal.api.workflowservice.v1.WorkflowService/StartWorkflowExecution").unwrap()
    }

    #[tokio::test]
    async fn a_message_declared_over_the_limit_is_refused_before_its_body_arrives() {
        let metrics = ProxyMetrics::default();
        let budgets = Budgets::new(1 << 30, 1 << 30);
        let mut body = start_body(never_ending(header(false, 5 << 20)), &metrics);
        let refused = body
            .head(&budgets, None)
            .await
            .expect_err("refused on its first five bytes");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            refused.message(),
            "Start: the message exceeds 4194304 bytes"
        );
        assert!(
            metrics
                .render()
                .contains("plinth_proxy_limited_total{limit=\"message_size\"} 1")
        );
    }

    #[tokio::test]
    async fn bytes_past_the_declared_length_are_refused_as_they_arrive() {
        let metrics = ProxyMetrics::default();
        let budgets = Budgets::new(1 << 30, 1 << 30);
        let bytes = [header(false, 10), vec![0; 2_000]].concat();
        let mut body = start_body(never_ending(bytes), &metrics);
        let refused = body.head(&budgets, None).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(
            refused.message().contains("more than one message"),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn a_body_that_does_not_arrive_in_time_is_refused_and_counted() {
        let metrics = ProxyMetrics::default();
        let budgets = Budgets::new(1 << 30, 1 << 30);
        let mut body = RequestBody::new(
            "Start",
            never_ending(header(false, 100)),
            4 << 20,
            std::time::Duration::from_millis(50),
            &metrics,
        );
        body.head(&budgets, None).await.unwrap();
        let refused = body.finish(None).await.err().expect("never whole");
        assert_eq!(refused.code(), tonic::Code::DeadlineExceeded);
        assert!(
            metrics
                .render()
                .contains("plinth_proxy_limited_total{limit=\"body_time\"} 1")
        );
    }

    #[tokio::test]
    async fn a_connection_over_its_budget_is_refused_and_counted_while_another_goes_on() {
        let metrics = ProxyMetrics::default();
        let budgets = Budgets::new(64 << 20, 3 << 20);
        let (greedy, other) = (budgets.connection(), budgets.connection());
        let mut first = start_body(never_ending(header(false, 2 << 20)), &metrics);
        first.head(&budgets, Some(&greedy)).await.unwrap();
        let mut second = start_body(never_ending(header(false, 2 << 20)), &metrics);
        let refused = second
            .head(&budgets, Some(&greedy))
            .await
            .expect_err("over the connection's budget");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused
                .message()
                .contains("max_buffered_bytes_per_connection")
        );
        let mut third = start_body(never_ending(header(false, 2 << 20)), &metrics);
        third
            .head(&budgets, Some(&other))
            .await
            .expect("another connection's own budget");
        assert!(
            metrics
                .render()
                .contains("plinth_proxy_limited_total{limit=\"connection_bytes\"} 1")
        );
    }

    #[tokio::test]
    async fn a_compressed_request_reserves_what_it_may_grow_to_up_to_the_limit() {
        let metrics = ProxyMetrics::default();
        // 100 compressed bytes may grow to 103,200: more than a 64 KiB budget holds.
        let budgets = Budgets::new(64 << 10, 64 << 10);
        let mut body = start_body(never_ending(header(true, 100)), &metrics);
        let refused = body.head(&budgets, None).await.unwrap_err();
        assert!(
            refused.message().contains("[proxy] max_buffered_bytes"),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn the_namespace_is_read_from_the_first_bytes_compressed_or_not() {
        use prost::Message as _;
        use temporalio_common::protos::temporal::api::workflowservice::v1::StartWorkflowExecutionRequest;
        let request = StartWorkflowExecutionRequest {
            namespace: "orders".into(),
            // Hex of a running counter's square: compresses poorly, so its start is a prefix.
            workflow_id: (0u64..2_000).map(|i| format!("{:x}", i * i)).collect(),
            ..Default::default()
        }
        .encode_to_vec();
        let budgets = Budgets::new(1 << 30, 1 << 30);
        let metrics = ProxyMetrics::default();

        let plain = [
            header(false, request.len() as u32),
            request[..1_100].to_vec(),
        ]
        .concat();
        let mut body = start_body(never_ending(plain), &metrics);
        body.head(&budgets, None).await.unwrap();
        let peeked = body.peek_namespace(start_rpc(), None).await.unwrap();
        assert_eq!(peeked, Some("orders".into()));

        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(&request).unwrap();
        let compressed = gzip.finish().unwrap();
        let framed = [
            header(true, compressed.len() as u32),
            compressed[..1_100].to_vec(),
        ]
        .concat();
        let mut body = start_body(never_ending(framed), &metrics);
        body.head(&budgets, None).await.unwrap();
        let gzip_header = HeaderValue::from_static("gzip");
        let peeked = body
            .peek_namespace(start_rpc(), Some(&gzip_header))
            .await
            .unwrap();
        assert_eq!(peeked, Some("orders".into()));
    }
}
