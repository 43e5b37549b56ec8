//! The console in a real browser: headless Chromium (Debian's `chromium` + `chromium-driver`)
//! driven over WebDriver. Open the page, see a registered node, see another appear and go
//! without reloading, see its TTL count down, and see an action refused without the admin
//! token and done with it. A failure saves a screenshot under the target directory; a
//! missing browser fails with the packages to install.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt as _;
use registry_conformance::init_tracing;
use registry_console::{AdminToken, Console, ConsoleOptions};
use registry_core::{MemoryBackend, MemoryStore, Registry, RegistryOptions, ServiceMetaInfo};
use registry_test_support::ChromeDriver;

const TOKEN: &str = "browser-test-token-0123456789";
const WAIT: Duration = Duration::from_secs(10);

type Error = Box<dyn std::error::Error + Send + Sync>;

fn registry(store: &Arc<MemoryStore>) -> Registry {
    let options = RegistryOptions::default()
        .with_ttl(Duration::from_secs(20))
        .with_heartbeat_interval(Duration::from_secs(5));
    Registry::new(Arc::new(MemoryBackend::new(store.clone())), options).unwrap()
}

/// Headless Chromium through `driver`.
async fn browser(driver: &ChromeDriver) -> Client {
    let capabilities = serde_json::json!({
        "goog:chromeOptions": {
            "binary": driver.browser(),
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,720"],
        }
    });
    let serde_json::Value::Object(capabilities) = capabilities else {
        unreachable!()
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&driver.url())
        .await
        .unwrap_or_else(|e| panic!("cannot start headless Chromium: {e}\n{}", driver.log_tail()))
}

/// The text of the element at `css` now, read in one step in the page (the page redraws
/// tables as changes arrive: an element found earlier may be gone by the time it is read).
async fn text(client: &Client, css: &str) -> Result<Option<String>, Error> {
    let script = "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;";
    let value = client.execute(script, vec![css.into()]).await?;
    Ok(value.as_str().map(str::to_owned))
}

/// Waits until the element at `css` is there; returns its text.
async fn shows(client: &Client, css: &str) -> Result<String, Error> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(text) = text(client, css).await? {
            return Ok(text);
        }
        if Instant::now() > deadline {
            return Err(format!("{css} never showed within {WAIT:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Clicks the element at `css` as a user would (found again if a redraw replaced it).
async fn click(client: &Client, css: &str) -> Result<(), Error> {
    let mut tries = 0;
    loop {
        let clicked = match client.find(Locator::Css(css)).await {
            Ok(element) => element.click().await.map(|_| ()),
            Err(e) => Err(e),
        };
        match clicked {
            Ok(()) => return Ok(()),
            Err(e) if tries < 20 => {
                tries += 1;
                tracing::debug!(error = %e, "click again");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(format!("cannot click {css}: {e}").into()),
        }
    }
}

/// Waits until `css` matches nothing.
async fn goes(client: &Client, css: &str) -> Result<(), Error> {
    let deadline = Instant::now() + WAIT;
    while text(client, css).await?.is_some() {
        if Instant::now() > deadline {
            return Err(format!("{css} still shows after {WAIT:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Waits until the text at `css` contains `text`.
async fn says(client: &Client, css: &str, text: &str) -> Result<(), Error> {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = shows(client, css).await?;
        if now.contains(text) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{css} says {now:?}, never {text:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn story(client: &Client, console: &Console, provider: &Registry) -> Result<(), Error> {
    let (a, b) = ("127.0.0.1:7201", "127.0.0.1:7202");
    client.goto(&console.url()).await?;
    // The services page lists the registered service, with its node count.
    let row = shows(client, r#"#services tr[data-key="users:1.0"]"#).await?;
    assert!(row.contains("users") && row.contains('1'), "{row}");
    says(client, "#store-kind", "memory").await?;
    says(client, "#health", "up").await?;
    says(client, "#live", "live").await?;
    // Its page shows the node.
    click(client, r#"#services tr[data-key="users:1.0"] a"#).await?;
    shows(client, &format!(r#"#nodes tr[data-node="{a}"]"#)).await?;
    // A marker that a reload would wipe.
    client.execute("window.notReloaded = true;", vec![]).await?;

    // Another node appears without a reload, and goes.
    let node_b = ServiceMetaInfo::new("users", "127.0.0.1", 7202);
    provider.register(node_b.clone()).await?;
    shows(client, &format!(r#"#nodes tr[data-node="{b}"]"#)).await?;
    provider.unregister(&node_b).await?;
    goes(client, &format!(r#"#nodes tr[data-node="{b}"]"#)).await?;
    says(client, "#log", &format!("removed {b}")).await?;
    let still = client
        .execute("return window.notReloaded === true;", vec![])
        .await?;
    assert_eq!(
        still,
        serde_json::Value::Bool(true),
        "the page was reloaded"
    );

    // The TTL counts down.
    let ttl_css = format!(r#"#nodes tr[data-node="{a}"] td.ttl"#);
    let read = |text: String| text.trim_end_matches(" s").parse::<f64>().ok();
    let first = read(shows(client, &ttl_css).await?).ok_or("no TTL shown")?;
    assert!(first > 0.0 && first <= 20.0, "TTL {first}");
    let deadline = Instant::now() + WAIT;
    let mut last = first;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = read(shows(client, &ttl_css).await?).ok_or("no TTL shown")?;
        if now < last {
            break;
        }
        last = now;
        if Instant::now() > deadline {
            return Err(format!("the TTL never went down (last {last})").into());
        }
    }

    // An action without the token is refused (401) and changes nothing.
    let disable = format!(r#"#nodes tr[data-node="{a}"] button[data-act="disable"]"#);
    click(client, &disable).await?;
    says(client, "#action-status", "refused (401)").await?;
    says(client, &format!(r#"#nodes tr[data-node="{a}"]"#), "enabled").await?;
    // With the token it is done, and the page shows the node disabled (from the stream).
    client
        .find(Locator::Css("#token"))
        .await?
        .send_keys(TOKEN)
        .await?;
    click(client, &disable).await?;
    says(client, "#action-status", "done").await?;
    says(
        client,
        &format!(r#"#nodes tr[data-node="{a}"]"#),
        "disabled",
    )
    .await?;
    says(client, "#log", "(disabled)").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_real_browser() {
    init_tracing();
    let driver = ChromeDriver::start().unwrap_or_else(|e| panic!("{e}"));
    let store = MemoryStore::new();
    let provider = registry(&store);
    provider
        .register(ServiceMetaInfo::new("users", "127.0.0.1", 7201).with_metadata("zone", "eu-1"))
        .await
        .unwrap();
    let options = ConsoleOptions::default()
        .with_listen("127.0.0.1:0".parse().unwrap())
        .with_store_address("in-process")
        .with_admin_token(AdminToken::new(TOKEN));
    let console = Console::start(registry(&store), options).await.unwrap();
    let client = browser(&driver).await;

    let result = std::panic::AssertUnwindSafe(story(&client, &console, &provider))
        .catch_unwind()
        .await;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let failed = !matches!(result, Ok(Ok(())));
    let shot = dir.join(if failed {
        "console-browser-failure.png"
    } else {
        "console-browser.png"
    });
    if let Ok(png) = client.screenshot().await {
        let _ = std::fs::write(&shot, png);
    }
    let _ = client.close().await;
    console.stop().await.unwrap();
    provider.shutdown().await.unwrap();
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{e} (screenshot: {})", shot.display()),
        Err(panic) => {
            eprintln!("screenshot: {}", shot.display());
            std::panic::resume_unwind(panic)
        }
    }
}
