//! The bus conformance suite: the same scenarios against the embedded bus (a fresh migrated
//! database per test, as the service role) and against NATS JetStream (a private nats-server per
//! test), plus checks only one implementation can make.

mod embedded_only;
mod harness;
mod nats_only;
mod scenarios;

/// Runs every listed scenario against both implementations. A scenario marked `restart` needs a
/// NATS server of its own to kill and restart, never a shared one.
macro_rules! conformance {
    ($($scenario:ident: $restart:expr),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let harness = crate::harness::EmbeddedHarness::new().await;
                    crate::scenarios::$scenario(harness).await;
                }
            )*
        }
        mod nats {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let harness = crate::harness::NatsHarness::new($restart).await;
                    crate::scenarios::$scenario(harness).await;
                }
            )*
        }
    };
}

conformance! {
    order_is_preserved_per_tenant: false,
    groups_receive_everything_independently: false,
    unacked_deliveries_go_to_the_next_consumer: false,
    acked_deliveries_are_not_delivered_again: false,
    nothing_is_lost_across_a_restart: true,
    republishing_within_the_window_adds_nothing: false,
    concurrent_publishers_leave_no_gaps: false,
    lag_counts_what_a_group_has_not_acked: false,
}
