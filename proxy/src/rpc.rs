//! What the proxy knows about each Temporal RPC: its access class, where its namespace is, and
//! whether its messages carry payloads. Built from the table in `rpc_table.rs`.

use std::collections::HashMap;
use std::sync::LazyLock;

use prost::Message;
use temporalio_common::protos::temporal::api::{operatorservice, workflowservice};

use crate::schema::{Carrier, SCHEMA};

/// The access an RPC needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Read access to the request's namespace.
    Read,
    /// Write access to the request's namespace.
    Write,
    /// Any authenticated caller; the request names no namespace.
    Open,
    /// Platform admins only.
    Admin,
}

impl Class {
    /// The label metrics and logs use.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Read => "read",
            Class::Write => "write",
            Class::Open => "open",
            Class::Admin => "admin",
        }
    }
}

/// One RPC of the table.
#[derive(Debug)]
pub struct Rpc {
    /// `WorkflowService` or `OperatorService`.
    pub service: &'static str,
    /// The method's name.
    pub method: &'static str,
    /// The access it needs.
    pub class: Class,
    /// Fully qualified request message type.
    pub request_type: &'static str,
    /// Fully qualified response message type.
    pub response_type: &'static str,
    /// The field number of the request's namespace; `None` for `Open` and `Admin` RPCs.
    namespace_field: Option<u32>,
    /// Where a request's payloads are; `None` when the request type has none.
    pub(crate) request_payloads: Option<Carrier>,
    /// Where a response's payloads are; `None` when the response type has none.
    pub(crate) response_payloads: Option<Carrier>,
    /// The request's `identity` field, which Temporal records as who made the call.
    pub(crate) identity_field: Option<u32>,
}

macro_rules! namespace_field {
    (Read, $request:ty) => {
        Some(namespace_field_of(<$request>::default(), |request| {
            &mut request.namespace
        }))
    };
    (Write, $request:ty) => {
        Some(namespace_field_of(<$request>::default(), |request| {
            &mut request.namespace
        }))
    };
    ($other:ident, $request:ty) => {
        None
    };
}

/// The fully qualified name of `$message` in `temporal.api.$package.v1`.
macro_rules! type_name {
    ($package:ident, $message:ident) => {
        concat!(
            "temporal.api.",
            stringify!($package),
            ".v1.",
            stringify!($message)
        )
    };
}

macro_rules! rpc_table {
    ($($service:ident in $package:ident {
        $($method:ident($request:ident, $response:ident) => $class:ident,)*
    })*) => {
        /// Every RPC of the table, in table order.
        pub fn all() -> Vec<Rpc> {
            vec![$($({
                let request_type = type_name!($package, $request);
                let response_type = type_name!($package, $response);
                Rpc {
                    service: stringify!($service),
                    method: stringify!($method),
                    class: Class::$class,
                    request_type,
                    response_type,
                    namespace_field: namespace_field!($class, $package::v1::$request),
                    request_payloads: SCHEMA.carrier(request_type),
                    response_payloads: SCHEMA.carrier(response_type),
                    identity_field: SCHEMA.identity_field(request_type),
                }
            },)*)*]
        }

        /// The SDK's payload visitor of every request and response type of the table, by
        /// type name; `None` where the SDK visits nothing.
        #[cfg(test)]
        pub(crate) fn sdk_visitors() -> Vec<(&'static str, Option<crate::payloads::oracle::Visit>)> {
            use crate::payloads::oracle::{VisitsNoPayloads as _, VisitsPayloads as _, probe};
            vec![$($(
                (type_name!($package, $request), probe::<$package::v1::$request>().visit()),
                (type_name!($package, $response), probe::<$package::v1::$response>().visit()),
            )*)*]
        }
    };
}

include!("rpc_table.rs");

/// gRPC path (`/temporal.api.workflowservice.v1.WorkflowService/StartWorkflowExecution`) to RPC.
static BY_PATH: LazyLock<HashMap<String, Rpc>> =
    LazyLock::new(|| all().into_iter().map(|rpc| (rpc.path(), rpc)).collect());

/// Builds the table, and the payload schema it reads, so that no call waits for them.
pub(crate) fn load() {
    LazyLock::force(&BY_PATH);
}

impl Rpc {
    /// The gRPC path clients call.
    pub fn path(&self) -> String {
        let package = self
            .request_type
            .rsplit_once('.')
            .map_or("", |(package, _)| package);
        format!("/{package}.{}/{}", self.service, self.method)
    }

    /// The RPC served at `path`, if the table has it.
    pub fn at(path: &str) -> Option<&'static Rpc> {
        BY_PATH.get(path)
    }

    /// The namespace named within `prefix`, the start of an encoded request, when its field is
    /// whole there (as far as the prefix goes, its last occurrence); empty for `Open` and
    /// `Admin` RPCs.
    pub(crate) fn namespace_in_prefix(&self, prefix: &[u8]) -> Option<String> {
        let Some(number) = self.namespace_field else {
            return Some(String::new());
        };
        let mut found = None;
        for field in crate::wire::fields(prefix).map_while(Result::ok) {
            if field.number == number && field.wire_type == 2 {
                found = Some(std::str::from_utf8(field.value).ok()?.to_owned());
            }
        }
        found
    }

    /// The namespace an encoded request names, read without decoding the rest of it; empty for
    /// `Open` and `Admin` RPCs.
    pub(crate) fn namespace(&self, request: &[u8]) -> Result<String, MalformedRequest> {
        match self.namespace_field {
            Some(field) => Ok(string_field(request, field)?.unwrap_or_default().to_owned()),
            None => Ok(String::new()),
        }
    }
}

/// The number of the field `namespace` points at in `T`'s encoding.
fn namespace_field_of<T: Message>(mut message: T, namespace: fn(&mut T) -> &mut String) -> u32 {
    *namespace(&mut message) = "n".to_owned();
    let encoded = message.encode_to_vec();
    let key = prost::encoding::decode_varint(&mut encoded.as_slice())
        .expect("a message with one field set encodes as that field");
    u32::try_from(key >> 3).expect("protobuf field numbers fit in 29 bits")
}

/// The namespace of a request the table does not know: by Temporal's convention, field 1 when
/// it is a string.
pub(crate) fn conventional_namespace(bytes: &[u8]) -> Option<String> {
    string_field(bytes, 1).ok().flatten().map(str::to_owned)
}

/// Why a request's namespace cannot be read.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("malformed request: {0}")]
pub(crate) struct MalformedRequest(&'static str);

/// The top-level string field `field` of an encoded message. When it occurs more than once the
/// last occurrence counts, as in every protobuf decoder, Temporal's included: authorizing the
/// first would let a request name one namespace here and another upstream.
fn string_field(bytes: &[u8], field: u32) -> Result<Option<&str>, MalformedRequest> {
    let mut found = None;
    for walked in crate::wire::fields(bytes) {
        let walked = walked.map_err(|e| MalformedRequest(e.0))?;
        if walked.number == field && walked.wire_type == 2 {
            found = Some(
                std::str::from_utf8(walked.value)
                    .map_err(|_| MalformedRequest("namespace is not UTF-8"))?,
            );
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::FileDescriptorSet;
    use std::collections::BTreeSet;

    fn descriptor_set() -> FileDescriptorSet {
        FileDescriptorSet::decode(
            &include_bytes!(concat!(env!("OUT_DIR"), "/temporal-descriptors.bin"))[..],
        )
        .expect("descriptor set decodes")
    }

    /// The service definitions the SDK's protos were generated from.
    fn sdk_methods() -> BTreeSet<(String, String, String, String)> {
        let set = descriptor_set();
        let mut methods = BTreeSet::new();
        for file in &set.file {
            let package = file.package();
            if package != "temporal.api.workflowservice.v1"
                && package != "temporal.api.operatorservice.v1"
            {
                continue;
            }
            for service in &file.service {
                for method in &service.method {
                    methods.insert((
                        service.name().to_owned(),
                        method.name().to_owned(),
                        method.input_type().trim_start_matches('.').to_owned(),
                        method.output_type().trim_start_matches('.').to_owned(),
                    ));
                }
            }
        }
        methods
    }

    #[test]
    fn the_table_classifies_every_rpc_of_the_sdk_with_its_message_types() {
        let table: BTreeSet<_> = all()
            .iter()
            .map(|rpc| {
                (
                    rpc.service.to_owned(),
                    rpc.method.to_owned(),
                    rpc.request_type.to_owned(),
                    rpc.response_type.to_owned(),
                )
            })
            .collect();
        let sdk = sdk_methods();
        assert!(sdk.len() > 100, "the descriptor set lists the services");
        let missing: Vec<_> = sdk.difference(&table).collect();
        assert!(
            missing.is_empty(),
            "RPCs missing from rpc_table.rs: {missing:#?}"
        );
        let stale: Vec<_> = table.difference(&sdk).collect();
        assert!(
            stale.is_empty(),
            "rpc_table.rs lists RPCs the SDK lacks: {stale:#?}"
        );
    }

    #[test]
    fn reads_are_reads_and_worker_traffic_is_write() {
        let class = |path: &str| Rpc::at(path).map(|rpc| rpc.class);
        let ws = "/temporal.api.workflowservice.v1.WorkflowService/";
        assert_eq!(
            class(&format!("{ws}DescribeWorkflowExecution")),
            Some(Class::Read)
        );
        assert_eq!(
            class(&format!("{ws}GetWorkflowExecutionHistory")),
            Some(Class::Read)
        );
        assert_eq!(
            class(&format!("{ws}ListWorkflowExecutions")),
            Some(Class::Read)
        );
        assert_eq!(class(&format!("{ws}QueryWorkflow")), Some(Class::Read));
        assert_eq!(
            class(&format!("{ws}StartWorkflowExecution")),
            Some(Class::Write)
        );
        assert_eq!(
            class(&format!("{ws}SignalWorkflowExecution")),
            Some(Class::Write)
        );
        assert_eq!(
            class(&format!("{ws}PollWorkflowTaskQueue")),
            Some(Class::Write)
        );
        assert_eq!(
            class(&format!("{ws}RespondActivityTaskCompleted")),
            Some(Class::Write)
        );
        assert_eq!(class(&format!("{ws}GetSystemInfo")), Some(Class::Open));
        assert_eq!(class(&format!("{ws}RegisterNamespace")), Some(Class::Admin));
        assert_eq!(
            class("/temporal.api.operatorservice.v1.OperatorService/DeleteNamespace"),
            Some(Class::Admin)
        );
        assert_eq!(class(&format!("{ws}NoSuchMethod")), None);
    }

    #[test]
    fn payload_bearing_messages_have_carriers_and_others_do_not() {
        let rpc = |method: &str| {
            Rpc::at(&format!(
                "/temporal.api.workflowservice.v1.WorkflowService/{method}"
            ))
            .unwrap()
        };
        assert!(rpc("StartWorkflowExecution").request_payloads.is_some());
        assert!(
            rpc("GetWorkflowExecutionHistory")
                .response_payloads
                .is_some()
        );
        assert!(rpc("PollActivityTaskQueue").response_payloads.is_some());
        assert!(rpc("QueryWorkflow").response_payloads.is_some());
        assert!(rpc("DescribeNamespace").request_payloads.is_none());
        assert!(rpc("GetSystemInfo").response_payloads.is_none());
    }

    /// Every path of message fields from `root` to a payload field, as field numbers, with no
    /// type more than twice on it (so a failure's cause is walked into).
    fn payload_paths(
        messages: &HashMap<String, Vec<crate::schema::FieldInfo>>,
        root: &str,
    ) -> Vec<Vec<u32>> {
        fn walk<'m>(
            messages: &'m HashMap<String, Vec<crate::schema::FieldInfo>>,
            name: &str,
            path: &mut Vec<u32>,
            on_path: &mut HashMap<&'m str, usize>,
            paths: &mut Vec<Vec<u32>>,
        ) {
            for field in messages.get(name).into_iter().flatten() {
                let (number, Some(held)) = (&field.number, &field.message) else {
                    continue;
                };
                path.push(*number);
                if held == "temporal.api.common.v1.Payload" {
                    paths.push(path.clone());
                } else if on_path.get(held.as_str()).copied().unwrap_or_default() < 2 {
                    *on_path.entry(held).or_default() += 1;
                    walk(messages, held, path, on_path, paths);
                    *on_path.entry(held).or_default() -= 1;
                }
                path.pop();
            }
        }
        let mut paths = Vec::new();
        walk(
            messages,
            root,
            &mut Vec::new(),
            &mut HashMap::new(),
            &mut paths,
        );
        paths
    }

    /// The schema read from the descriptors must find, in every request and response, exactly
    /// the payloads the SDK's generated visitors encode: one message per path to a payload
    /// field, search attributes included, each holding that one payload.
    #[test]
    fn the_schema_finds_exactly_the_payloads_the_sdk_encodes() {
        use crate::wire::length_delimited;
        let messages = crate::schema::message_fields(&descriptor_set());
        let (mut checked, mut mismatches) = (0, Vec::new());
        for (type_name, visit) in sdk_visitors() {
            let carrier = SCHEMA.carrier(type_name);
            for path in payload_paths(&messages, type_name) {
                let payload = length_delimited(2, b"marker");
                let message = path
                    .iter()
                    .rev()
                    .fold(payload, |inner, number| length_delimited(*number, &inner));
                let mut found = 0;
                if let Some(carrier) = carrier {
                    SCHEMA
                        .rewrite(&message, carrier, &mut |_: &[u8]| {
                            found += 1;
                            Ok::<_, ()>(None)
                        })
                        .expect("the message walks");
                }
                let encoded = visit.map_or(0, |visit| {
                    visit(&message).unwrap_or_else(|e| panic!("{type_name} {path:?}: {e}"))
                });
                if found != encoded {
                    mismatches.push(format!(
                        "{type_name} {path:?}: the SDK encodes {encoded}, the schema finds {found}"
                    ));
                }
                checked += 1;
            }
        }
        assert!(checked > 1000, "only {checked} paths: the walk is broken");
        assert!(
            mismatches.is_empty(),
            "{checked} paths, {} differ: {mismatches:#?}",
            mismatches.len()
        );
    }

    /// Payloads reachable only through an `Any` (an update inside a protocol message, a
    /// failure inside an error's details) are found too: the schema enters an `Any` of every
    /// type of Temporal's protos that carries a payload, so a new one is entered without a
    /// change here.
    #[test]
    fn the_schema_enters_an_any_of_every_type_that_carries_payloads() {
        use crate::wire::length_delimited;
        let messages = crate::schema::message_fields(&descriptor_set());
        let carrier = SCHEMA
            .carrier("temporal.api.workflowservice.v1.PollWorkflowTaskQueueResponse")
            .unwrap();
        let (mut checked, mut missed) = (0, Vec::new());
        for type_name in messages.keys() {
            let Some(path) = payload_paths(&messages, type_name).into_iter().next() else {
                continue;
            };
            let value = path
                .iter()
                .rev()
                .fold(length_delimited(2, b"marker"), |inner, number| {
                    length_delimited(*number, &inner)
                });
            let any = [
                length_delimited(1, format!("type.googleapis.com/{type_name}").as_bytes()),
                length_delimited(2, &value),
            ]
            .concat();
            // PollWorkflowTaskQueueResponse.messages (15), protocol Message.body (5).
            let poll = length_delimited(15, &length_delimited(5, &any));
            let count = |message: &[u8], carrier| {
                let mut found = 0;
                SCHEMA
                    .rewrite(message, carrier, &mut |_: &[u8]| {
                        found += 1;
                        Ok::<_, ()>(None)
                    })
                    .expect("the message walks");
                found
            };
            // As many as in the type itself, where search attributes hold none.
            let direct = SCHEMA
                .reached(type_name)
                .map_or(0, |inner| count(&value, inner));
            if count(&poll, carrier) != direct {
                missed.push(type_name.clone());
            }
            checked += usize::from(direct == 1);
        }
        assert!(
            checked > 100,
            "only {checked} types carry payloads: the walk is broken"
        );
        assert!(missed.is_empty(), "not entered through an Any: {missed:#?}");
        assert!(
            SCHEMA.carrier(crate::schema::STATUS).is_some(),
            "error details are entered"
        );
    }

    #[test]
    fn namespaces_come_from_the_namespace_field_wherever_it_is() {
        use workflowservice::v1::RespondActivityTaskCompletedRequest;
        let request = RespondActivityTaskCompletedRequest {
            namespace: "orders".into(),
            identity: "worker-1".into(),
            ..Default::default()
        };
        let rpc = Rpc::at(
            "/temporal.api.workflowservice.v1.WorkflowService/RespondActivityTaskCompleted",
        )
        .unwrap();
        assert_eq!(rpc.namespace(&request.encode_to_vec()).unwrap(), "orders");
    }

    #[test]
    fn a_repeated_namespace_field_counts_as_its_last_occurrence() {
        use workflowservice::v1::StartWorkflowExecutionRequest;
        let named = |namespace: &str| StartWorkflowExecutionRequest {
            namespace: namespace.into(),
            workflow_id: "w".into(),
            ..Default::default()
        };
        let mut smuggled = named("allowed").encode_to_vec();
        smuggled.extend(named("victim").encode_to_vec());
        let decoded = StartWorkflowExecutionRequest::decode(smuggled.as_slice()).unwrap();
        let rpc =
            Rpc::at("/temporal.api.workflowservice.v1.WorkflowService/StartWorkflowExecution")
                .unwrap();
        assert_eq!(rpc.namespace(&smuggled).unwrap(), decoded.namespace);
        assert_eq!(conventional_namespace(&smuggled).as_deref(), Some("victim"));
        let error = rpc.namespace(&smuggled[..smuggled.len() - 1]).unwrap_err();
        assert_eq!(error.to_string(), "malformed request: truncated field");
    }

    #[test]
    fn unknown_requests_name_their_namespace_in_field_one() {
        use workflowservice::v1::StartWorkflowExecutionRequest;
        let request = StartWorkflowExecutionRequest {
            namespace: "orders".into(),
            workflow_id: "w".into(),
            ..Default::default()
        };
        assert_eq!(
            conventional_namespace(&request.encode_to_vec()).as_deref(),
            Some("orders")
        );
        assert_eq!(conventional_namespace(&[0x08, 0x01]), None);
        assert_eq!(
            conventional_namespace(&[0x0a, 0x09, b'x']),
            None,
            "truncated"
        );
    }
}
