//! The admin HTTP listener: `/healthz`, `/metrics` (Prometheus text) and the NATS monitoring
//! endpoints (`/varz`, `/connz`, `/subsz`) contributed by the NATS frontend.
//!
//! # Invariants
//! - Handlers only read counters and snapshots; none of them blocks the router.

use std::fmt::Write as _;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router as Http};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use polymq_core::Router;

/// The admin routes.
pub fn routes(router: Router, nats: polymq_nats::monitor::Monitor) -> Http {
    Http::new()
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({ "status": "ok" })) }),
        )
        .route("/metrics", get(move || metrics(router.clone())))
        .merge(polymq_nats::monitor::routes(nats))
}

async fn metrics(router: Router) -> impl IntoResponse {
    let mut text = String::with_capacity(4096);
    router.metrics().render(&mut text);
    render_queues(&router, &mut text);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// Queue depths of nsqd topics and channels, and of other durable queues.
fn render_queues(router: &Router, out: &mut String) {
    let _ = writeln!(
        out,
        "# HELP polymq_queue_depth Ready messages per topic buffer and channel.\n\
         # TYPE polymq_queue_depth gauge"
    );
    for topic in router.topics() {
        let stats = topic.stats();
        let _ = writeln!(
            out,
            "polymq_queue_depth{{topic=\"{}\",channel=\"\"}} {}",
            stats.name, stats.depth
        );
        for (channel, queue) in &stats.channels {
            let _ = writeln!(
                out,
                "polymq_queue_depth{{topic=\"{}\",channel=\"{channel}\"}} {}",
                stats.name, queue.depth
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP polymq_retained_messages Retained messages held.\n\
         # TYPE polymq_retained_messages gauge\npolymq_retained_messages {}",
        router.retained_count()
    );
    let _ = writeln!(
        out,
        "# HELP polymq_subscriptions Subscription index entries.\n\
         # TYPE polymq_subscriptions gauge\npolymq_subscriptions {}",
        router.subscription_count()
    );
}

/// Serves `app` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    app: Http,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
