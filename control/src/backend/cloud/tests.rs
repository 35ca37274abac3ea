//! The Cloud backend against the Ops API test double (a real gRPC server from the public
//! protos; Temporal Cloud itself cannot be reached from here).

use std::sync::Arc;
use std::time::Duration;

use plinth_cloud_double::{Double, Settings};
use plinth_identity::CertificateAuthority;
use temporalio_common::protos::temporal::api::cloud::namespace::v1::CertificateFilterSpec;
use temporalio_common::protos::temporal::api::cloud::namespace::v1::namespace_spec::SearchAttributeType;

use super::*;
use crate::backend::progress::Progress;

const KEY: &str = "test-api-key";

struct Fixture {
    double: Double,
    backend: Cloud,
    ca: Vec<u8>,
    _dir: tempfile::TempDir,
}

async fn fixture(settings: Settings) -> Fixture {
    fixture_with(settings, UpstreamAuth::Mtls).await
}

/// The proxy's service account when it reaches namespaces with an API key.
const PROXY_ACCOUNT: &str = "plinth-proxy";

/// A backend whose proxy reaches namespaces with a key of [`PROXY_ACCOUNT`], which exists.
async fn api_key_fixture() -> Fixture {
    let f = fixture_with(
        Settings::default(),
        UpstreamAuth::ApiKey {
            service_account: PROXY_ACCOUNT.into(),
        },
    )
    .await;
    f.double.add_service_account(PROXY_ACCOUNT);
    f
}

/// The permission the proxy's service account holds on `orders`.
fn proxy_permission(f: &Fixture) -> i32 {
    let account = f.double.service_account(PROXY_ACCOUNT).unwrap();
    let full = f.backend.full_name("orders");
    account
        .spec
        .unwrap()
        .access
        .unwrap()
        .namespace_accesses
        .get(&full)
        .map_or(0, |a| a.permission)
}

async fn fixture_with(mut settings: Settings, upstream: UpstreamAuth) -> Fixture {
    if settings.api_keys.is_empty() {
        settings.api_keys = vec![KEY.into()];
    }
    let double = Double::start("127.0.0.1:0", settings).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let ca = CertificateAuthority::generate("Plinth test CA")
        .unwrap()
        .cert_pem()
        .as_bytes()
        .to_vec();
    let backend = Cloud::new(CloudSettings {
        export_sink: None,
        endpoint: format!("http://{}", double.address()),
        account: double.account(),
        api_key: SecretSource::File(key_file),
        accepted_client_ca: ca.clone(),
        api_key_auth: upstream != UpstreamAuth::Mtls,
        codec_endpoint: Some("https://codec.example.com".into()),
        operation_timeout: Duration::from_secs(30),
        invite_users: false,
        upstream,
    })
    .unwrap();
    Fixture {
        double,
        backend,
        ca,
        _dir: dir,
    }
}

fn spec() -> NamespaceSpec {
    NamespaceSpec {
        name: "orders".into(),
        owner: "payments".into(),
        regions: vec!["us-east-1".into()],
        retention_days: 7,
        search_attributes: [("CustomerId".to_owned(), "Keyword".to_owned())].into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_namespace_is_created_with_the_platform_settings_once_its_operation_ends() {
    let f = fixture(Settings::default()).await;
    f.backend.register(&spec()).await.unwrap();
    let namespace = f.double.namespace("orders").unwrap();
    assert_eq!(
        namespace.namespace,
        format!("orders.{}", f.double.account())
    );
    assert_eq!(
        namespace.state,
        ResourceState::Active as i32,
        "waited for the operation"
    );
    let cloud = namespace.spec.unwrap();
    assert_eq!(cloud.retention_days, 7);
    assert_eq!(
        cloud.replicas,
        [ReplicaSpec {
            region: "aws-us-east-1".into()
        }]
    );
    assert_eq!(cloud.mtls_auth.unwrap().accepted_client_ca, f.ca);
    assert_eq!(
        cloud.codec_server.unwrap().endpoint,
        "https://codec.example.com"
    );
    assert!(
        cloud.lifecycle.unwrap().enable_delete_protection,
        "allowDeletion is off"
    );
    assert_eq!(
        cloud.search_attributes["CustomerId"],
        SearchAttributeType::Keyword as i32
    );
    let observed = f.backend.describe("orders").await.unwrap().unwrap();
    assert!(
        observed.setting_differences(&spec()).is_empty(),
        "{observed:?}"
    );
    assert_eq!(
        f.backend.endpoint("orders").await.unwrap(),
        Settings::default().grpc_address
    );
}

#[tokio::test]
async fn with_an_api_key_upstream_the_proxys_account_gets_write_and_the_api_key_endpoint_is_recorded()
 {
    let f = api_key_fixture().await;
    f.backend.register(&spec()).await.unwrap();
    assert_eq!(proxy_permission(&f), Permission::Write as i32);
    let mtls = f
        .double
        .namespace("orders")
        .unwrap()
        .spec
        .unwrap()
        .mtls_auth
        .unwrap();
    assert!(
        !mtls.enabled && mtls.accepted_client_ca.is_empty(),
        "no client certificate opens it"
    );
    assert_eq!(
        f.backend.endpoint("orders").await.unwrap(),
        Settings::default().api_key_address
    );
}

#[tokio::test]
async fn access_runs_neither_see_nor_change_the_proxys_service_account() {
    let f = api_key_fixture().await;
    f.backend.register(&spec()).await.unwrap();
    let access = f.backend.list_access("orders").await.unwrap();
    assert!(!access.contains_key("app:plinth-proxy"), "{access:?}");
    let error = f
        .backend
        .apply_access(
            "orders",
            &[AccessChange::Grant(
                "app:plinth-proxy".into(),
                AccessLevel::Read,
            )],
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("Plinth keeps its access itself"), "{error}");
    assert_eq!(proxy_permission(&f), Permission::Write as i32);
}

#[tokio::test]
async fn the_proxys_access_taken_away_in_cloud_is_drift_that_an_update_repairs() {
    let f = api_key_fixture().await;
    f.backend.register(&spec()).await.unwrap();
    let id = f.double.service_account(PROXY_ACCOUNT).unwrap().id;
    f.double
        .set_service_account_permission(&id, "orders", Permission::Unspecified);
    let observed = f.backend.describe("orders").await.unwrap().unwrap();
    let drift = observed.setting_differences(&spec());
    assert!(drift.iter().any(|d| d.contains(PROXY_ACCOUNT)), "{drift:?}");
    f.backend.update(&spec()).await.unwrap();
    assert_eq!(proxy_permission(&f), Permission::Write as i32);
}

#[tokio::test]
async fn a_renamed_proxy_account_stays_hidden_from_access_runs_and_is_not_given_access_again() {
    let f = api_key_fixture().await;
    f.backend.register(&spec()).await.unwrap();
    let id = f.double.service_account(PROXY_ACCOUNT).unwrap().id;
    f.double.rename_service_account(&id, "billing");
    let access = f.backend.list_access("orders").await.unwrap();
    assert!(!access.contains_key("app:billing"), "{access:?}");
    f.double
        .set_service_account_permission(&id, "orders", Permission::Unspecified);
    let error = f.backend.update(&spec()).await.unwrap_err().to_string();
    assert!(
        error.contains("no service account named plinth-proxy"),
        "{error}"
    );
    assert_eq!(
        f.double
            .service_account("billing")
            .unwrap()
            .spec
            .unwrap()
            .access
            .unwrap()
            .namespace_accesses
            .len(),
        0,
        "no access for the account that was the proxy's"
    );
}

#[tokio::test]
async fn a_proxy_account_name_two_accounts_bear_is_refused() {
    let f = api_key_fixture().await;
    f.double.add_service_account(PROXY_ACCOUNT);
    let error = f.backend.check_upstream().await.unwrap_err().to_string();
    assert!(
        error.contains("several service accounts named plinth-proxy"),
        "{error}"
    );
}

#[tokio::test]
async fn a_missing_proxy_service_account_is_named_in_the_refusal() {
    let f = fixture_with(
        Settings::default(),
        UpstreamAuth::ApiKey {
            service_account: "nobody".into(),
        },
    )
    .await;
    let error = f.backend.register(&spec()).await.unwrap_err().to_string();
    assert!(
        error.contains("upstream_service_account") && error.contains("nobody"),
        "{error}"
    );
    assert!(f.double.namespace("orders").is_none(), "nothing created");
}

#[tokio::test]
async fn a_region_cloud_does_not_list_is_refused_by_name() {
    let f = fixture(Settings::default()).await;
    let spec = NamespaceSpec {
        regions: vec!["mars-north-1".into()],
        ..spec()
    };
    let error = f.backend.register(&spec).await.unwrap_err().to_string();
    assert!(
        error.contains("spec.regions") && error.contains("mars-north-1"),
        "{error}"
    );
    assert_eq!(f.double.mutations(), 0);
}

#[tokio::test]
async fn an_update_that_loses_a_race_reads_again_and_keeps_the_other_change() {
    let f = fixture(Settings::default()).await;
    f.backend.register(&spec()).await.unwrap();
    let filter = CertificateFilterSpec {
        common_name: "billing".into(),
        ..Default::default()
    };
    let theirs = filter.clone();
    f.double.interfere_with_next_update(move |namespace| {
        let spec = namespace.spec.as_mut().unwrap();
        spec.mtls_auth.as_mut().unwrap().certificate_filters = vec![theirs];
    });
    let longer = NamespaceSpec {
        retention_days: 30,
        ..spec()
    };
    f.backend.update(&longer).await.unwrap();
    let cloud = f.double.namespace("orders").unwrap().spec.unwrap();
    assert_eq!(cloud.retention_days, 30);
    assert_eq!(cloud.mtls_auth.unwrap().certificate_filters, [filter]);
    assert_eq!(
        f.double.calls()["UpdateNamespace"],
        2,
        "one refused as stale, one planned again"
    );
}

#[tokio::test]
async fn a_failed_operation_is_refused_with_clouds_reason() {
    let f = fixture(Settings::default()).await;
    f.double.fail_next_operation("namespace quota exceeded");
    let error = f.backend.register(&spec()).await.unwrap_err();
    assert!(
        matches!(&error, BackendError::Rejected(m) if m.contains("namespace quota exceeded")),
        "{error}"
    );
}

#[tokio::test]
async fn rate_limited_calls_wait_as_told_and_succeed() {
    let f = fixture(Settings {
        burst: 2,
        calls_per_second: 10,
        retry_delay: Duration::from_millis(150),
        ..Settings::default()
    })
    .await;
    f.backend.register(&spec()).await.unwrap();
    assert!(f.double.throttled() > 0, "the burst was exceeded");
    assert_eq!(
        f.double.namespace("orders").unwrap().state,
        ResourceState::Active as i32
    );
}

#[tokio::test]
async fn a_restart_of_the_ops_api_mid_call_is_waited_out() {
    let f = Arc::new(
        fixture(Settings {
            polls_to_complete: 6,
            ..Settings::default()
        })
        .await,
    );
    let restarting = {
        let f = f.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            f.double.restart(Duration::from_millis(500)).await.unwrap();
        })
    };
    f.backend.register(&spec()).await.unwrap();
    restarting.await.unwrap();
    assert_eq!(
        f.double.namespace("orders").unwrap().state,
        ResourceState::Active as i32
    );
}

/// The heartbeat of an activity attempt that recorded `operation` before it died.
struct Resumed(String);

#[async_trait::async_trait]
impl Progress for Resumed {
    fn resumed(&self) -> Option<String> {
        Some(self.0.clone())
    }
    async fn record(&self, _operation: &str) {}
}

#[tokio::test]
async fn an_attempt_that_resumes_an_operation_finishes_it_and_creates_nothing_twice() {
    let f = fixture(Settings {
        polls_to_complete: 1000,
        ..Settings::default()
    })
    .await;
    // The first attempt dies while the create runs.
    let first = tokio::time::timeout(Duration::from_millis(300), f.backend.register(&spec())).await;
    assert!(first.is_err(), "still waiting on the operation");
    let operation = f.double.namespace("orders").unwrap().async_operation_id;
    f.double.set_polls_to_complete(1);
    progress::scope(Arc::new(Resumed(operation)), f.backend.register(&spec()))
        .await
        .unwrap();
    assert_eq!(f.double.calls()["CreateNamespace"], 1);
    assert_eq!(
        f.double.namespace("orders").unwrap().state,
        ResourceState::Active as i32
    );
}

#[tokio::test]
async fn delete_lifts_clouds_protection_then_removes_the_namespace() {
    let f = fixture(Settings::default()).await;
    f.backend.register(&spec()).await.unwrap();
    f.backend.delete("orders").await.unwrap();
    assert!(f.double.namespace("orders").is_none());
    f.backend.delete("orders").await.unwrap();
}

#[tokio::test]
async fn access_is_read_in_one_pass_and_changed_one_write_per_change() {
    let f = fixture(Settings::default()).await;
    f.backend.register(&spec()).await.unwrap();
    f.double.add_user("alice@example.com");
    f.double.add_user("bob@example.com");
    f.double.add_service_account("billing");
    let grants = [
        AccessChange::Grant("user:alice@example.com".into(), AccessLevel::Write),
        AccessChange::Grant("user:bob@example.com".into(), AccessLevel::Read),
        AccessChange::Grant("app:billing".into(), AccessLevel::Write),
    ];
    assert_eq!(f.backend.apply_access("orders", &grants).await.unwrap(), 3);
    let access = f.backend.list_access("orders").await.unwrap();
    assert_eq!(
        access,
        [
            ("app:billing".to_owned(), AccessLevel::Write),
            ("user:alice@example.com".to_owned(), AccessLevel::Write),
            ("user:bob@example.com".to_owned(), AccessLevel::Read),
        ]
        .into()
    );
    let changes = [
        AccessChange::Change("user:bob@example.com".into(), AccessLevel::Write),
        AccessChange::Revoke("user:alice@example.com".into()),
    ];
    assert_eq!(f.backend.apply_access("orders", &changes).await.unwrap(), 2);
    let access = f.backend.list_access("orders").await.unwrap();
    assert_eq!(
        access.get("user:bob@example.com"),
        Some(&AccessLevel::Write)
    );
    assert_eq!(access.get("user:alice@example.com"), None);
    let alice = f.double.user("alice@example.com").unwrap();
    assert!(
        alice
            .spec
            .unwrap()
            .access
            .unwrap()
            .namespace_accesses
            .is_empty()
    );
}

#[tokio::test]
async fn a_person_not_in_the_account_is_reported_after_the_others_are_applied() {
    let f = fixture(Settings::default()).await;
    f.backend.register(&spec()).await.unwrap();
    f.double.add_user("alice@example.com");
    let grants = [
        AccessChange::Grant("user:carol@example.com".into(), AccessLevel::Read),
        AccessChange::Grant("user:alice@example.com".into(), AccessLevel::Read),
    ];
    let error = f
        .backend
        .apply_access("orders", &grants)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("carol@example.com is not a user"), "{error}");
    let access = f.backend.list_access("orders").await.unwrap();
    assert_eq!(
        access.get("user:alice@example.com"),
        Some(&AccessLevel::Read)
    );
}

#[tokio::test]
async fn a_key_cloud_does_not_know_is_refused_at_the_identity_check() {
    let f = fixture(Settings {
        api_keys: vec!["another-key".into()],
        ..Settings::default()
    })
    .await;
    let error = f.backend.identity().await.unwrap_err();
    assert!(
        matches!(&error, BackendError::Rejected(m) if m.contains("Unauthenticated")),
        "{error}"
    );
    assert!(!error.to_string().contains(KEY), "the key is never shown");
}

#[tokio::test]
async fn a_person_not_in_the_account_is_invited_with_access_when_configured() {
    let mut f = fixture(Settings::default()).await;
    f.backend.settings.invite_users = true;
    f.backend.register(&spec()).await.unwrap();
    let grant = [AccessChange::Grant(
        "user:carol@example.com".into(),
        AccessLevel::Write,
    )];
    assert_eq!(f.backend.apply_access("orders", &grant).await.unwrap(), 1);
    let carol = f.double.user("carol@example.com").expect("invited");
    assert!(carol.invitation.is_some());
    let access = f.backend.list_access("orders").await.unwrap();
    assert_eq!(
        access.get("user:carol@example.com"),
        Some(&AccessLevel::Write)
    );
}

#[tokio::test]
async fn a_namespace_plinth_did_not_create_is_neither_changed_nor_deleted() {
    let f = fixture(Settings::default()).await;
    f.backend.register(&spec()).await.unwrap();
    f.double
        .edit_namespace("orders", |namespace| namespace.tags.clear());
    let longer = NamespaceSpec {
        retention_days: 30,
        ..spec()
    };
    let error = f.backend.update(&longer).await.unwrap_err().to_string();
    assert!(error.contains("was not created by Plinth"), "{error}");
    assert!(f.backend.delete("orders").await.is_err());
    let namespace = f.double.namespace("orders").expect("still there");
    assert_eq!(namespace.spec.unwrap().retention_days, 7);
}

#[tokio::test]
async fn access_to_a_namespace_plinth_did_not_create_is_not_changed() {
    let f = fixture(Settings::default()).await;
    f.backend.register(&spec()).await.unwrap();
    f.double.add_user("alice@example.com");
    f.double
        .edit_namespace("orders", |namespace| namespace.tags.clear());
    let mutations = f.double.mutations();
    let grant = [AccessChange::Grant(
        "user:alice@example.com".into(),
        AccessLevel::Write,
    )];
    let error = f.backend.apply_access("orders", &grant).await.unwrap_err();
    assert!(
        error.to_string().contains("was not created by Plinth"),
        "{error}"
    );
    assert_eq!(f.double.mutations(), mutations);
}

#[tokio::test]
async fn the_accounts_audit_log_is_read_from_the_cursor_on_each_record_once() {
    let f = fixture(Settings::default()).await;
    f.backend.register(&spec()).await.unwrap();
    let mut other = spec();
    other.name = "payments".into();
    f.backend.register(&other).await.unwrap();
    let first = f.backend.account_audit(None, 1).await.unwrap().unwrap();
    assert_eq!(first.records.len(), 1, "at most what was asked for");
    let record = &first.records[0];
    assert!(record.id.starts_with("cloud:log-"), "{record:?}");
    assert_eq!(record.action, "cloud.CreateNamespace");
    assert_eq!(record.actor, "cloud:serviceaccount:plinth");
    assert!(
        record.namespace.is_empty(),
        "the account's log is for admins"
    );
    assert!(record.detail.contains("orders"), "{record:?}");
    assert_eq!(record.check(), Ok(()));
    let rest = f
        .backend
        .account_audit(first.cursor.clone(), 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rest.records.len(), 1);
    assert!(rest.records[0].detail.contains("payments"));
    assert_ne!(rest.records[0].id, record.id);
    let none = f
        .backend
        .account_audit(rest.cursor.clone(), 100)
        .await
        .unwrap()
        .unwrap();
    assert!(none.records.is_empty());
    assert_eq!(none.cursor, rest.cursor, "the cursor stays where it was");
}
