//! `registryctl health` against TLS and access-controlled stores: exit 0 with the right
//! settings, 2 for configuration errors (wrong CA, expired certificate, wrong password,
//! missing permission, TLS files with a plain address), 1 for connection errors; every
//! message names the store and the address. Run with `--nocapture` to see the messages the
//! README's failure table quotes.

#![cfg(all(feature = "etcd", feature = "redis"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use registry_test_support::{EtcdServer, RedisServer, TestPki};

fn health(registry: &str, address: &str, env: &[(&str, String)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_registryctl"));
    cmd.args(["--registry", registry, "--address", address, "health"])
        .current_dir(std::env::temp_dir())
        .env("RPC_REGISTRY_CONFIG_TIMEOUT", "2000")
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run registryctl")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn expect(case: &str, out: &Output, code: i32, port: u16, needle: &str) {
    let text = text(out);
    println!(
        "| {case} | {} | `{}` |",
        code,
        text.trim().replace('\n', " ")
    );
    assert_eq!(out.status.code(), Some(code), "{case}: {text}");
    assert!(text.contains(&port.to_string()), "{case}: {text}");
    assert!(text.contains(needle), "{case}: {text}");
}

fn path(p: &std::path::Path) -> String {
    p.display().to_string()
}

#[test]
fn tls_and_credentials_failures_exit_2_and_name_the_store_and_address() {
    let pki = TestPki::generate().unwrap();
    let ca = |p: &std::path::Path| vec![("RPC_REGISTRY_CONFIG_TLS_CA_FILE", path(p))];
    let mtls = |ca: &std::path::Path, cert: &std::path::Path, key: &std::path::Path| {
        vec![
            ("RPC_REGISTRY_CONFIG_TLS_CA_FILE", path(ca)),
            ("RPC_REGISTRY_CONFIG_TLS_CERT_FILE", path(cert)),
            ("RPC_REGISTRY_CONFIG_TLS_KEY_FILE", path(key)),
        ]
    };

    // etcd with mutual TLS and a password.
    let etcd = EtcdServer::start_tls(&pki, &pki.server, true, &[]).unwrap();
    let e = etcd.endpoint();
    let good = mtls(&pki.ca, &pki.client.cert, &pki.client.key);
    let out = health("etcd", &e, &good);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let p = etcd.port();
    let wrong_ca = mtls(&pki.other_ca, &pki.client.cert, &pki.client.key);
    expect(
        "etcd: wrong CA",
        &health("etcd", &e, &wrong_ca),
        2,
        p,
        "UnknownIssuer",
    );
    let expired = mtls(&pki.ca, &pki.expired_client.cert, &pki.expired_client.key);
    expect(
        "etcd: expired client certificate",
        &health("etcd", &e, &expired),
        2,
        p,
        "TLS",
    );
    expect(
        "etcd: no client certificate",
        &health("etcd", &e, &ca(&pki.ca)),
        2,
        p,
        "TLS",
    );
    let plain = e.replace("https://", "http://");
    expect(
        "etcd: plain client, TLS server",
        &health("etcd", &plain, &[]),
        1,
        p,
        "cannot connect",
    );
    let plain_etcd = EtcdServer::start().unwrap();
    let https = plain_etcd.endpoint().replace("http://", "https://");
    expect(
        "etcd: TLS client, plain server",
        &health("etcd", &https, &ca(&pki.ca)),
        2,
        plain_etcd.port(),
        "TLS",
    );
    // Wrong password, then a user without permission under the root.
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["user", "grant-role", "root", "root"],
        &["user", "add", "reader:readpw"],
        &["role", "add", "registry-consumer"],
        &[
            "role",
            "grant-permission",
            "registry-consumer",
            "--prefix=true",
            "read",
            "/rpc/",
        ],
        &["user", "grant-role", "reader", "registry-consumer"],
        &["auth", "enable"],
    ] {
        assert!(plain_etcd.etcdctl(args).status.success(), "{args:?}");
    }
    let pe = plain_etcd.endpoint();
    let user = |u: &str, pw: &str| {
        vec![
            ("RPC_REGISTRY_CONFIG_USERNAME", u.to_owned()),
            ("RPC_REGISTRY_CONFIG_PASSWORD", pw.to_owned()),
        ]
    };
    expect(
        "etcd: wrong password",
        &health("etcd", &pe, &user("root", "nope")),
        2,
        plain_etcd.port(),
        "authentication",
    );
    let denied = health("etcd", &pe, &user("reader", "readpw"));
    println!(
        "| etcd: read-only user, health writes a probe | {:?} | `{}` |",
        denied.status.code(),
        text(&denied).trim()
    );
    assert_eq!(denied.status.code(), Some(2), "{}", text(&denied));
    assert!(
        text(&denied).contains("permission denied"),
        "{}",
        text(&denied)
    );
    assert!(!text(&denied).contains("readpw") && !text(&denied).contains("nope"));

    // Redis with client certificates.
    let redis =
        RedisServer::start_tls(&pki, &pki.server, true, &["--requirepass", "s3cret"]).unwrap();
    let r = redis.tls_url().unwrap();
    let rp: u16 = r.rsplit(':').next().unwrap().parse().unwrap();
    let mut good = mtls(&pki.ca, &pki.client.cert, &pki.client.key);
    good.push(("RPC_REGISTRY_CONFIG_PASSWORD", "s3cret".into()));
    let out = health("redis", &r, &good);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mut wrong_ca = mtls(&pki.other_ca, &pki.client.cert, &pki.client.key);
    wrong_ca.push(("RPC_REGISTRY_CONFIG_PASSWORD", "s3cret".into()));
    expect(
        "redis: wrong CA",
        &health("redis", &r, &wrong_ca),
        2,
        rp,
        "UnknownIssuer",
    );
    let mut wrong_pw = mtls(&pki.ca, &pki.client.cert, &pki.client.key);
    wrong_pw.push(("RPC_REGISTRY_CONFIG_PASSWORD", "hunter2".into()));
    let out = health("redis", &r, &wrong_pw);
    expect("redis: wrong password", &out, 2, rp, "authentication");
    assert!(!text(&out).contains("hunter2"));
    let plain = r.replace("rediss://", "redis://");
    expect(
        "redis: TLS files, redis:// address",
        &health("redis", &plain, &good),
        2,
        rp,
        "rediss://",
    );
    expect(
        "redis: plain client, TLS port",
        &health("redis", &plain, &[]),
        1,
        rp,
        "cannot connect",
    );
    let to_plain = format!("rediss://127.0.0.1:{}", redis.port());
    expect(
        "redis: TLS client, plain port",
        &health("redis", &to_plain, &good),
        1,
        redis.port(),
        "may not speak TLS",
    );
    let missing = vec![(
        "RPC_REGISTRY_CONFIG_TLS_CA_FILE",
        "/nonexistent/ca.pem".to_owned(),
    )];
    let out = health("redis", &r, &missing);
    println!(
        "| missing CA file | {:?} | `{}` |",
        out.status.code(),
        text(&out).trim()
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("rpc.registryConfig.tls.caFile"),
        "{}",
        text(&out)
    );
}

/// ZooKeeper on its secure client port with client certificates required, and Redis through
/// TLS Sentinels: exit 0 with the right files, 2 with the wrong CA or no client certificate.
#[cfg(feature = "zookeeper")]
#[test]
fn zookeeper_and_redis_sentinel_tls_exit_0_or_2() {
    use registry_test_support::{RedisSentinel, ZkServer};

    let pki = TestPki::generate().unwrap();
    let files = |ca: &std::path::Path, identity: Option<&registry_test_support::CertFiles>| {
        let mut env = vec![("RPC_REGISTRY_CONFIG_TLS_CA_FILE", path(ca))];
        if let Some(id) = identity {
            env.push(("RPC_REGISTRY_CONFIG_TLS_CERT_FILE", path(&id.cert)));
            env.push(("RPC_REGISTRY_CONFIG_TLS_KEY_FILE", path(&id.key)));
        }
        env
    };
    let good = files(&pki.ca, Some(&pki.client));
    let wrong_ca = files(&pki.other_ca, Some(&pki.client));
    let no_identity = files(&pki.ca, None);

    let zk = ZkServer::start_tls(&pki, &pki.server, true).unwrap();
    let z = zk.secure_connect_string().unwrap();
    let p: u16 = z.rsplit_once(':').unwrap().1.parse().unwrap();
    let out = health("zookeeper", &z, &good);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    expect(
        "ZooKeeper: wrong CA",
        &health("zookeeper", &z, &wrong_ca),
        2,
        p,
        "UnknownIssuer",
    );
    expect(
        "ZooKeeper: no client certificate",
        &health("zookeeper", &z, &no_identity),
        2,
        p,
        "client's certificate",
    );
    drop(zk);

    let sentinels = RedisSentinel::start_tls(&pki, true).unwrap();
    let s = sentinels.address();
    let p: u16 = s
        .trim_start_matches("redis+sentinel://")
        .split(',')
        .next()
        .and_then(|a| a.rsplit_once(':'))
        .unwrap()
        .1
        .parse()
        .unwrap();
    let out = health("redis", &s, &good);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    expect(
        "Redis Sentinels: wrong CA",
        &health("redis", &s, &wrong_ca),
        2,
        p,
        "UnknownIssuer",
    );
}
