//! The AWS KMS provider against a KMS stand-in (`moto` in server mode), with `boto3` as the
//! independent client: what Plinth wraps, boto3 unwraps, and the reverse.

use std::sync::{Arc, OnceLock};

use base64::Engine;
use plinth_codec::{
    Codec, CodecError, CodecSettings, KEY_BYTES, KekProvider, NamespaceKeys, Payload, wrap_aad,
};
use plinth_kms::{AwsKmsProvider, AwsKmsSettings};
use plinth_test_support::{KmsStandIn, boto3_at};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// Set in the child a test runs in: the stand-in's endpoint.
const ENDPOINT: &str = "PLINTH_TEST_KMS_ENDPOINT";

fn stand_in() -> &'static KmsStandIn {
    static KMS: OnceLock<KmsStandIn> = OnceLock::new();
    KMS.get_or_init(|| KmsStandIn::start().unwrap())
}

/// The calling test's provider, its installation key under an alias of the test's own. The
/// SDK's credential chain reads the environment and a test may not set its own: so the test
/// runs again in a child that has it, and `None` means the child ran it and passed.
fn provider(test: &str) -> Option<AwsKmsProvider> {
    if let Ok(endpoint) = std::env::var(ENDPOINT) {
        let provider = AwsKmsProvider::open(&settings(test, &endpoint)).unwrap();
        provider.init().unwrap();
        return Some(provider);
    }
    let kms = stand_in();
    let mut env = kms.env();
    env.push((ENDPOINT, kms.endpoint()));
    plinth_test_support::rerun_with_env(test, env);
    None
}

fn settings(test: &str, endpoint: &str) -> AwsKmsSettings {
    AwsKmsSettings {
        key: format!("alias/{test}"),
        region: None,
        endpoint: Some(endpoint.to_owned()),
        namespace_alias_prefix: format!("alias/{test}/ns/"),
    }
}

/// Runs a boto3 `script` against the stand-in, from the child.
fn boto3(script: &str) -> String {
    boto3_at(&std::env::var(ENDPOINT).unwrap(), script).unwrap()
}

#[test]
fn a_data_key_wrapped_by_plinth_opens_in_boto3_and_the_reverse() {
    let Some(kms) = provider("a_data_key_wrapped_by_plinth_opens_in_boto3_and_the_reverse") else {
        return;
    };
    let kek = kms.active_kek().unwrap();
    assert!(kek.starts_with("arn:aws:kms:"), "{kek}");
    let dek = [0x42u8; KEY_BYTES];
    let wrapped = kms.wrap(&kek, &dek, &wrap_aad("orders", &kek)).unwrap();
    let opened = boto3(&format!(
        "out = kms.decrypt(KeyId={kek:?}, CiphertextBlob=base64.b64decode({:?}), \
         EncryptionContext={{'plinth': 'dek/v1', 'namespace': 'orders'}})\n\
         print(base64.b64encode(out['Plaintext']).decode())",
        B64.encode(&wrapped)
    ));
    assert_eq!(B64.decode(opened.trim()).unwrap(), dek);

    let from_boto3 = boto3(&format!(
        "out = kms.encrypt(KeyId={kek:?}, Plaintext=bytes([7] * 32), \
         EncryptionContext={{'plinth': 'dek/v1', 'namespace': 'orders'}})\n\
         print(base64.b64encode(out['CiphertextBlob']).decode())"
    ));
    let wrapped = B64.decode(from_boto3.trim()).unwrap();
    assert_eq!(
        kms.unwrap(&kek, &wrapped, &wrap_aad("orders", &kek))
            .unwrap(),
        vec![7u8; KEY_BYTES]
    );
}

#[test]
fn a_wrapped_data_key_opens_for_its_own_namespace_only() {
    let Some(kms) = provider("a_wrapped_data_key_opens_for_its_own_namespace_only") else {
        return;
    };
    let kek = kms.active_kek().unwrap();
    let wrapped = kms
        .wrap(&kek, &[1; KEY_BYTES], &wrap_aad("orders", &kek))
        .unwrap();
    let refused = kms
        .unwrap(&kek, &wrapped, &wrap_aad("payments", &kek))
        .unwrap_err();
    assert!(matches!(refused, CodecError::Tampered { .. }), "{refused}");
    let mut altered = wrapped.clone();
    *altered.last_mut().unwrap() ^= 1;
    let refused = kms
        .unwrap(&kek, &altered, &wrap_aad("orders", &kek))
        .unwrap_err();
    assert!(matches!(refused, CodecError::Tampered { .. }), "{refused}");
}

#[test]
fn rotation_points_the_alias_at_a_new_key_and_older_keys_still_open() {
    let Some(kms) = provider("rotation_points_the_alias_at_a_new_key_and_older_keys_still_open")
    else {
        return;
    };
    let old = kms.active_kek().unwrap();
    let sealed_before = kms
        .wrap(&old, &[3; KEY_BYTES], &wrap_aad("orders", &old))
        .unwrap();
    let new = kms.rotate().unwrap();
    assert_ne!(old, new);
    assert_eq!(
        kms.active_kek().unwrap(),
        new,
        "this process sees it at once"
    );
    let listed = kms.list().unwrap();
    let state = |id: &str| {
        listed
            .iter()
            .find(|k| k.id == id)
            .map(|k| k.state)
            .unwrap_or_else(|| panic!("{id} listed: {listed:?}"))
    };
    assert_eq!(state(&new), plinth_codec::KeyState::Active);
    assert_eq!(state(&old), plinth_codec::KeyState::DecryptOnly);
    assert_eq!(
        kms.unwrap(&old, &sealed_before, &wrap_aad("orders", &old))
            .unwrap(),
        vec![3u8; KEY_BYTES]
    );
}

#[test]
fn a_namespaces_own_key_is_made_once_tagged_with_its_namespace() {
    let Some(kms) = provider("a_namespaces_own_key_is_made_once_tagged_with_its_namespace") else {
        return;
    };
    let made = kms.ensure("orders.acme").unwrap();
    assert_eq!(kms.ensure("orders.acme").unwrap(), made, "made once");
    assert_eq!(kms.namespace_kek("orders.acme").unwrap(), made);
    assert_eq!(
        kms.kek_namespace(&made).unwrap().as_deref(),
        Some("orders.acme")
    );
    assert_eq!(kms.kek_namespace(&kms.active_kek().unwrap()).unwrap(), None);
    let alias = kms.namespace_alias("orders.acme");
    assert!(alias.ends_with("/ns/orders_2eacme"), "{alias}");
    // Another reader of the account finds the key by its alias and tag.
    let seen = boto3(&format!(
        "meta = kms.describe_key(KeyId={alias:?})['KeyMetadata']\n\
         tags = kms.list_resource_tags(KeyId=meta['KeyId'])['Tags']\n\
         print(meta['Arn'], [t['TagValue'] for t in tags if t['TagKey'] == 'plinth-namespace'])"
    ));
    assert_eq!(seen.trim(), format!("{made} ['orders.acme']"));
    let refused = kms.rotate_namespace("unknown").unwrap_err();
    assert!(
        refused.to_string().contains("no key of its own"),
        "{refused}"
    );
}

#[test]
fn when_kms_is_down_sealing_fails_closed_and_opening_serves_from_the_cache() {
    const TEST: &str = "when_kms_is_down_sealing_fails_closed_and_opening_serves_from_the_cache";
    if provider(TEST).is_none() {
        return;
    }
    // A KMS of this test's own, to stop.
    let own = KmsStandIn::start().unwrap();
    let kms = AwsKmsProvider::open(&settings(TEST, &own.endpoint())).unwrap();
    kms.init().unwrap();
    let kek = kms.active_kek().unwrap();
    let codec = Codec::new(Arc::new(kms), CodecSettings::default());
    let payload = Payload {
        data: b"\"kept\"".to_vec(),
        ..Default::default()
    };
    let sealed = codec.encode_payload("orders", payload.clone()).unwrap();
    let fresh = Codec::new(
        Arc::new(AwsKmsProvider::open(&settings(TEST, &own.endpoint())).unwrap()),
        CodecSettings::default(),
    );
    assert_eq!(
        fresh.decode_payload("orders", sealed.clone()).unwrap(),
        payload
    );
    drop(own);

    // Opening goes on from the data key already unwrapped.
    assert_eq!(fresh.decode_payload("orders", sealed).unwrap(), payload);
    // A namespace that needs a new data key gets none, and nothing is sealed.
    let refused = fresh.encode_payload("payments", payload).unwrap_err();
    let CodecError::Provider { provider, key, .. } = &refused else {
        panic!("{refused}");
    };
    assert_eq!(*provider, "aws-kms");
    assert!(key == &kek || key == &format!("alias/{TEST}"), "{refused}");
}

#[test]
fn a_shredded_namespace_key_is_disabled_and_deleted_in_kms_and_says_by_whom() {
    let Some(kms) =
        provider("a_shredded_namespace_key_is_disabled_and_deleted_in_kms_and_says_by_whom")
    else {
        return;
    };
    let kek = kms.ensure("doomed").unwrap();
    let wrapped = kms
        .wrap(&kek, &[9; KEY_BYTES], &wrap_aad("doomed", &kek))
        .unwrap();
    let now = std::time::SystemTime::now();
    // Scheduled, then restored before it is due: nothing is destroyed.
    let later = now + std::time::Duration::from_secs(3600);
    let scheduled = kms
        .schedule_shred("doomed", "user:ops@example.com", later)
        .unwrap();
    assert_eq!(scheduled.keys, std::slice::from_ref(&kek));
    assert_eq!(kms.restore("doomed").unwrap(), std::slice::from_ref(&kek));
    assert_eq!(
        kms.shred_due("doomed").unwrap(),
        plinth_codec::ShredOutcome::Restored
    );
    kms.unwrap(&kek, &wrapped, &wrap_aad("doomed", &kek))
        .unwrap();

    kms.schedule_shred("doomed", "user:ops@example.com", now)
        .unwrap();
    assert_eq!(
        kms.shred_due("doomed").unwrap(),
        plinth_codec::ShredOutcome::Shredded(vec![kek.clone()])
    );
    assert_eq!(
        kms.shred_due("doomed").unwrap(),
        plinth_codec::ShredOutcome::Shredded(vec![kek.clone()]),
        "a retried shred finds it done"
    );
    let refused = kms
        .unwrap(&kek, &wrapped, &wrap_aad("doomed", &kek))
        .unwrap_err();
    let CodecError::Shredded { namespace, by, .. } = &refused else {
        panic!("{refused}");
    };
    assert_eq!(
        (namespace.as_str(), by.as_str()),
        ("doomed", "user:ops@example.com")
    );
    let state = boto3(&format!(
        "print(kms.describe_key(KeyId={kek:?})['KeyMetadata']['KeyState'])"
    ));
    assert_eq!(state.trim(), "PendingDeletion");
    let refused = kms.restore("doomed").unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("a shredded key cannot be restored"),
        "{refused}"
    );
    // The name made again gets a key of its own, not the shredded one.
    assert_ne!(kms.ensure("doomed").unwrap(), kek);
}

#[test]
fn a_shred_not_yet_due_waits_and_can_be_restored_until_then() {
    let Some(kms) = provider("a_shred_not_yet_due_waits_and_can_be_restored_until_then") else {
        return;
    };
    let kek = kms.ensure("later").unwrap();
    let due = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    kms.schedule_shred("later", "user:ops", due).unwrap();
    assert!(matches!(
        kms.shred_due("later").unwrap(),
        plinth_codec::ShredOutcome::NotYet(_)
    ));
    let refused = kms.rotate_namespace("later").unwrap_err();
    assert!(
        refused.to_string().contains("to be shredded at"),
        "{refused}"
    );
    assert_eq!(kms.restore("later").unwrap(), std::slice::from_ref(&kek));
    kms.rotate_namespace("later").unwrap();
    // Too near its time, a restore is refused: the worker may be shredding already.
    let soon = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    kms.schedule_shred("later", "user:ops", soon).unwrap();
    let refused = kms.restore("later").unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("a key being shredded cannot be restored"),
        "{refused}"
    );
}

#[test]
fn installations_sharing_an_account_never_touch_each_others_keys() {
    const TEST: &str = "installations_sharing_an_account_never_touch_each_others_keys";
    let Some(ours) = provider(TEST) else {
        return;
    };
    let theirs = AwsKmsProvider::open(&settings(
        &format!("{TEST}-neighbour"),
        &std::env::var(ENDPOINT).unwrap(),
    ))
    .unwrap();
    theirs.init().unwrap();
    let their_key = theirs.ensure("orders").unwrap();
    let our_key = ours.ensure("orders").unwrap();
    assert_ne!(our_key, their_key);
    let now = std::time::SystemTime::now();
    let scheduled = ours.schedule_shred("orders", "user:ops", now).unwrap();
    assert_eq!(scheduled.keys, std::slice::from_ref(&our_key));
    ours.shred_due("orders").unwrap();
    // Their key of the same name lives on and opens.
    let aad = wrap_aad("orders", &their_key);
    let wrapped = theirs.wrap(&their_key, &[4; KEY_BYTES], &aad).unwrap();
    assert_eq!(
        theirs.unwrap(&their_key, &wrapped, &aad).unwrap(),
        vec![4; KEY_BYTES]
    );
    assert!(
        ours.list().unwrap().iter().all(|k| k.id != their_key),
        "not listed as ours"
    );
    // A payload naming their key is not opened here, nor is KMS asked to.
    let refused = ours.unwrap(&their_key, &wrapped, &aad).unwrap_err();
    assert!(matches!(refused, CodecError::UnknownKey(_)), "{refused}");
    let made_up = "arn:aws:kms:eu-central-1:999999999999:key/00000000-0000-0000-0000-000000000000";
    let refused = ours
        .unwrap(made_up, &wrapped, &wrap_aad("orders", made_up))
        .unwrap_err();
    assert!(matches!(refused, CodecError::UnknownKey(_)), "{refused}");
}

#[test]
fn a_namespace_alias_naming_a_key_not_its_own_seals_nothing_and_is_not_repointed() {
    const TEST: &str =
        "a_namespace_alias_naming_a_key_not_its_own_seals_nothing_and_is_not_repointed";
    let Some(ours) = provider(TEST) else {
        return;
    };
    let endpoint = std::env::var(ENDPOINT).unwrap();
    // A second installation given the same alias prefix.
    let theirs = AwsKmsProvider::open(&AwsKmsSettings {
        key: format!("alias/{TEST}-neighbour"),
        ..settings(TEST, &endpoint)
    })
    .unwrap();
    theirs.init().unwrap();
    let key = ours.ensure("orders").unwrap();
    let refused = theirs.ensure("orders").unwrap_err();
    assert!(matches!(refused, CodecError::Provider { .. }), "{refused}");
    let refused = theirs.rotate_namespace("orders").unwrap_err();
    assert!(
        refused.to_string().contains("not this installation's"),
        "{refused}"
    );
    assert_eq!(
        ours.namespace_kek("orders").unwrap(),
        key,
        "the alias was left alone"
    );
    // Anyone allowed UpdateAlias points it at a key of their own.
    let alias = ours.namespace_alias("orders");
    boto3(&format!(
        "other = kms.create_key()['KeyMetadata']['Arn']\n\
         kms.update_alias(AliasName={alias:?}, TargetKeyId=other)"
    ));
    let fresh = AwsKmsProvider::open(&settings(TEST, &endpoint)).unwrap();
    let refused = fresh.namespace_kek("orders").unwrap_err();
    assert!(
        matches!(&refused, CodecError::Provider { reason, .. } if reason.contains("not this installation's")),
        "{refused}"
    );
}

#[test]
fn who_deleted_a_namespace_is_recorded_in_what_a_kms_tag_may_hold() {
    let Some(kms) = provider("who_deleted_a_namespace_is_recorded_in_what_a_kms_tag_may_hold")
    else {
        return;
    };
    let kek = kms.ensure("tagged").unwrap();
    let due = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    kms.schedule_shred("tagged", "user:o'brien!#@example.com", due)
        .unwrap();
    let listed = kms.list().unwrap();
    let mark = listed
        .iter()
        .find(|k| k.id == kek)
        .and_then(|k| k.shred.clone())
        .expect("marked");
    assert_eq!(mark.by, "user:o_brien__@example.com");
}
