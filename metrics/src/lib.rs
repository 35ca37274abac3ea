//! Temporal metrics on their way to a company's time-series database: endpoints scraped, their
//! samples relabelled with the Plinth namespace and owner they belong to, then sent as
//! Prometheus remote-write series in batches with retries, nothing lost without being counted.
//! Also the registry Plinth's own processes expose their metrics with.

pub mod export;
pub mod exposition;
mod http;
pub mod registry;
pub mod relabel;
pub mod remote_write;
pub mod scrape;

pub use export::LatestSamples;
pub use exposition::{ExpositionError, Format};
pub use http::{EndpointError, TokenError, read_bearer_token};
pub use registry::{Counter, DURATION_BUCKETS, Gauge, Histogram, Metric, exposition};
pub use relabel::{DropRule, DropRuleError, Managed, Relabel, Relabelled, ScrapedSample};
pub use remote_write::{Label, RemoteWrite, Sample, SendReport, SendSettings, TimeSeries};
pub use scrape::{ScrapeError, Scraped, Scraper};
