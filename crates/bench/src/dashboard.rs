//! `tributary-bench dashboard`: the server time of each dashboard and explorer query through
//! the JSON API (`/api/v1/analytics/*`, an in-process web server, an API token of the tenant)
//! against the same question asked by hand-written SQL on the same data in the same run, over
//! one tenant seeded with read models worth `--events` events beside `--tenants` smaller ones.
//! It also shows, from `pg_stat_user_tables` and from the plan, that a week of 1-hour buckets
//! is answered from the hourly rollup. Prints figures; it is not a test. docs/benchmarks.md has
//! the figures of the development machine.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use domain::{Plan, Role, TenantAttributes, TenantId, UserId};
use serde_json::Value;
use store::service::bench_support::{self, Bind, DashboardShape, TableScans};
use store::{Actor, ConnectionSettings, Database, Scope, TenantTx};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tributary::Settings;

/// The API's p95 may be at most this many times the hand-written SQL's.
const TARGET_RATIO: f64 = 1.5;

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  \
tributary-bench dashboard                       10M events, 20 other tenants, 30 samples each\n  \
tributary-bench dashboard --events 200000 --tenants 3 --samples 10\n\n\
Build with --release for meaningful figures.")]
pub struct DashboardArgs {
    /// Events the measured tenant's read models are worth (readings, one a minute row).
    #[arg(long, default_value_t = 10_000_000, value_name = "N")]
    pub events: u64,
    /// Other tenants beside it, each with a fiftieth of its events.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub tenants: u32,
    /// Timed runs of each query, through the API and as SQL (after two untimed ones).
    #[arg(long, default_value_t = 30, value_name = "N")]
    pub samples: u32,
}

pub async fn dashboard(args: DashboardArgs, settings: Settings) -> anyhow::Result<ExitCode> {
    if args.events < 1000 || args.samples == 0 {
        bail!("--events must be at least 1000 and --samples at least 1");
    }
    let outcome =
        crate::scratch::with_scratch_database(settings, "dashboard", async |_, connected| {
            println!("  machine: {}", crate::machine::describe());
            run(&args, &connected.database, &connected.connection_settings).await
        })
        .await;
    let report = outcome?;
    report.print();
    Ok(ExitCode::SUCCESS)
}

/// Percentiles of a set of timings, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timing {
    pub p50: f64,
    pub p95: f64,
}

impl Timing {
    fn of(samples: &mut [Duration]) -> Self {
        samples.sort();
        let percentile = |p: f64| {
            samples
                .get(((samples.len() as f64 * p).ceil() as usize).saturating_sub(1))
                .map_or(0.0, |sample| sample.as_secs_f64() * 1000.0)
        };
        Timing {
            p50: percentile(0.50),
            p95: percentile(0.95),
        }
    }
}

/// One query's figures.
#[derive(Debug, Clone)]
pub struct Measured {
    pub name: String,
    pub api: Timing,
    pub sql: Timing,
    /// Points (series), items (lists), keys (the catalogue) or 1 (a detail) the API answered,
    /// and rows the SQL did: they should agree.
    pub api_rows: usize,
    pub sql_rows: usize,
}

impl Measured {
    pub fn ratio(&self) -> f64 {
        self.api.p95 / self.sql.p95.max(0.001)
    }

    pub fn meets_target(&self) -> bool {
        self.ratio() <= TARGET_RATIO
    }
}

/// What shows that a week of 1-hour buckets was answered from the hourly rollup.
#[derive(Debug, Clone, Default)]
pub struct RollupProof {
    /// Scans of `metrics_hour` and of `metrics_min` while the API answered it once.
    pub hour_scans: TableScans,
    pub minute_scans: TableScans,
    /// The relations the plan of the read layer's statement scans.
    pub plan_relations: Vec<String>,
}

impl RollupProof {
    pub fn answered_from_rollup(&self) -> bool {
        self.hour_scans.total() > 0
            && self.minute_scans.total() == 0
            && self
                .plan_relations
                .iter()
                .any(|name| name == "metrics_hour")
            && !self.plan_relations.iter().any(|name| name == "metrics_min")
    }
}

#[derive(Debug, Clone)]
pub struct Report {
    pub events: u64,
    pub tenants: u32,
    pub samples: u32,
    pub seed: Duration,
    pub minute_rows: u64,
    pub hour_rows: u64,
    pub measured: Vec<Measured>,
    pub rollup: RollupProof,
}

impl Report {
    fn print(&self) {
        println!();
        println!(
            "dashboard and explorer queries over {} events' read models ({} minute rows, {} hour \
             rows of the measured tenant, {} other tenants; seeded in {:.0} s); {} samples each, \
             server time in ms",
            self.events,
            self.minute_rows,
            self.hour_rows,
            self.tenants,
            self.seed.as_secs_f64(),
            self.samples
        );
        println!(
            "  {:<44} {:>9} {:>9} {:>9} {:>9} {:>7}  target",
            "query", "API p50", "API p95", "SQL p50", "SQL p95", "ratio"
        );
        for measured in &self.measured {
            println!(
                "  {:<44} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>7.2}  {}{}",
                measured.name,
                measured.api.p50,
                measured.api.p95,
                measured.sql.p50,
                measured.sql.p95,
                measured.ratio(),
                if measured.meets_target() {
                    "met"
                } else {
                    "MISSED"
                },
                if measured.api_rows == measured.sql_rows {
                    String::new()
                } else {
                    format!(
                        " (API {} rows, SQL {})",
                        measured.api_rows, measured.sql_rows
                    )
                }
            );
        }
        let missed = self
            .measured
            .iter()
            .filter(|measured| !measured.meets_target())
            .count();
        println!(
            "  API p95 <= {TARGET_RATIO} x SQL p95: {} of {} queries ({missed} missed)",
            self.measured.len() - missed,
            self.measured.len()
        );
        println!(
            "a week of 1-hour buckets from the hourly rollup: {} (while the API answered it once: \
             metrics_hour {} seq + {} index scans, metrics_min {} seq + {} index scans; the plan \
             reads {})",
            if self.rollup.answered_from_rollup() {
                "yes"
            } else {
                "NO"
            },
            self.rollup.hour_scans.seq_scan,
            self.rollup.hour_scans.idx_scan,
            self.rollup.minute_scans.seq_scan,
            self.rollup.minute_scans.idx_scan,
            self.rollup.plan_relations.join(", ")
        );
    }
}

/// One query: its API path, and the same question as hand-written SQL.
#[derive(Debug, Clone)]
struct Case {
    name: String,
    path: String,
    sql: String,
    binds: Vec<Bind>,
}

/// Seeds, serves, measures. Used by the command and by its test.
pub async fn run(
    args: &DashboardArgs,
    database: &Database,
    connection: &ConnectionSettings,
) -> anyhow::Result<Report> {
    let run_name = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let end = OffsetDateTime::now_utc()
        .replace_nanosecond(0)?
        .replace_second(0)?
        .replace_minute(0)?;
    let shape = shape_for(args.events, end);
    println!(
        "seeding {} events' read models of one tenant ({} sites, {} devices, {} sessions over \
         {} days) and {} other tenants of a fiftieth each ...",
        args.events, shape.sites, shape.devices, shape.sessions, shape.days, args.tenants
    );
    let started = Instant::now();
    let tenant = create_tenant(database, &format!("bench {run_name} dashboard")).await?;
    let chunks = (shape.days).max(1);
    let mut progress = |what: &str| {
        println!("  {:>6.1} s  {what}", started.elapsed().as_secs_f64());
    };
    let seeded =
        bench_support::seed_dashboard_tenant(connection, tenant, &shape, chunks, &mut progress)
            .await?;
    let small = shape_for((args.events / 50).max(1000), end);
    for index in 0..args.tenants {
        let other = create_tenant(database, &format!("bench {run_name} other {index}")).await?;
        let mut quiet = |_: &str| {};
        let rows =
            bench_support::seed_dashboard_tenant(connection, other, &small, 1, &mut quiet).await?;
        progress(&format!(
            "other tenant {} of {}: {} minute rows",
            index + 1,
            args.tenants,
            rows.minutes
        ));
    }
    bench_support::analyze_read_models(connection).await?;
    let seed = started.elapsed();
    progress("analyzed");

    let token = {
        let mut tx = TenantTx::begin(
            &database.app,
            Scope::Member {
                tenant,
                user: UserId::new_random(),
                role: Role::Owner,
            },
        )
        .await?;
        let (token, text) = store::api_tokens::create(
            &mut tx,
            "dashboard bench",
            Role::Viewer,
            time::Duration::days(1),
        )
        .await?;
        tx.commit().await?;
        (token.token_id, text)
    };
    let scope = Scope::ApiToken {
        tenant,
        token: token.0,
        role: Role::Viewer,
        holder: None,
    };
    let (addr, stop) = serve(database).await?;
    let client = Client {
        addr,
        token: token.1.clone(),
    };

    // First, while nothing else has read through the server: its counts in the statistics are
    // then only this query's.
    let week = SeriesCase {
        key: "power_kw",
        range: time::Duration::days(7),
        step: "1h",
        agg: "avg",
        group_by: None,
        filter: None,
    };
    let rollup = prove_rollup(database, connection, &client, &scope, &week, end).await?;
    println!(
        "  a week of 1-hour buckets read metrics_hour {} times and metrics_min {} times",
        rollup.hour_scans.total(),
        rollup.minute_scans.total()
    );
    let cases = cases(&client, &shape).await?;
    println!(
        "measuring {} queries, {} samples each through the API and as SQL ...",
        cases.len(),
        args.samples
    );
    let mut measured = Vec::with_capacity(cases.len());
    for case in &cases {
        let mut api = Vec::new();
        let mut sql = Vec::new();
        let (mut api_rows, mut sql_rows) = (0, 0);
        // Alternately, so that both see the same machine: it is shared.
        for sample in 0..args.samples + 2 {
            let (elapsed, rows) = client.server_time(&case.path).await?;
            api_rows = rows;
            let started = Instant::now();
            let rows = hand_written(database, &scope, case).await?;
            let sql_elapsed = started.elapsed();
            sql_rows = rows;
            if sample >= 2 {
                api.push(elapsed);
                sql.push(sql_elapsed);
            }
        }
        let figures = Measured {
            name: case.name.clone(),
            api: Timing::of(&mut api),
            sql: Timing::of(&mut sql),
            api_rows,
            sql_rows,
        };
        println!(
            "  {:<44} API p95 {:>8.2} ms, SQL p95 {:>8.2} ms",
            figures.name, figures.api.p95, figures.sql.p95
        );
        measured.push(figures);
    }

    let _ = stop.send(());
    Ok(Report {
        events: args.events,
        tenants: args.tenants,
        samples: args.samples,
        seed,
        minute_rows: seeded.minutes,
        hour_rows: seeded.hours,
        measured,
        rollup,
    })
}

/// The read models of `events` events: a tenth of the readings from sessions, the rest from
/// devices that report about every five minutes over a month.
fn shape_for(events: u64, end: OffsetDateTime) -> DashboardShape {
    let events = events as i64;
    let days = 35;
    let devices = (events / 10_000).clamp(10, 1000);
    DashboardShape {
        source: uuid::Uuid::new_v4(),
        sites: (devices / 20).max(2),
        devices,
        sessions: (events / 500).max(20),
        device_readings: events - events / 10,
        session_readings: events / 10,
        end,
        days,
    }
}

async fn create_tenant(database: &Database, name: &str) -> anyhow::Result<TenantId> {
    let attributes = TenantAttributes::parse(name, Plan::Team, "energy", "eu")?;
    Ok(
        store::control::create_tenant(&database.app, Actor::Cli("bench".into()), &attributes)
            .await?
            .tenant_id,
    )
}

/// The web application on a loopback port, with a layer that reports each response's server
/// time (from the request's arrival to its response, body serialised) in `Server-Timing`.
async fn serve(
    database: &Database,
) -> anyhow::Result<(SocketAddr, tokio::sync::oneshot::Sender<()>)> {
    let secret = secrecy::SecretString::from(uuid::Uuid::new_v4().to_string());
    let state = web::AppState {
        database: database.app.clone(),
        metrics: None,
        min_cohort: 5,
        sso: web::sso::Sso::new(
            &secret,
            web::outbound::Outbound::new(web::outbound::OutboundPolicy::production()),
            None,
        ),
        mail: None,
        live: web::LiveStreams::default(),
        alert_secrets: web::alerting::channel_secrets(&secret),
        trusted_proxies: web::client_addr::TrustedProxies::none(),
        exports: reports::ExportStore::in_memory(),
        agents: web::agent_setup::AgentEndpoint {
            edge_url: "https://edge.example.test:8443".to_owned(),
            ca_pem:
                "-----BEGIN CERTIFICATE-----\nnot a real certificate\n-----END CERTIFICATE-----\n"
                    .to_owned(),
        },
    };
    let router = web::router(state).layer(axum::middleware::from_fn(server_timing));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stopped.await;
        })
        .await;
    });
    Ok((addr, stop))
}

async fn server_timing(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let started = Instant::now();
    let mut response = next.run(request).await;
    let micros = started.elapsed().as_micros();
    if let Ok(value) = axum::http::HeaderValue::from_str(&format!("app;dur={micros}")) {
        response.headers_mut().insert("server-timing", value);
    }
    response
}

/// A client of the API with the tenant's token.
#[derive(Debug)]
struct Client {
    addr: SocketAddr,
    token: String,
}

impl Client {
    /// GETs `path`: the answer's JSON, and its server time.
    async fn get(&self, path: &str) -> anyhow::Result<(Value, Duration)> {
        let mut stream = tokio::net::TcpStream::connect(self.addr).await?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
             Authorization: Bearer {}\r\n\r\n",
            self.addr, self.token
        );
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        let response = String::from_utf8(response).context("the answer is not UTF-8")?;
        let (head, body) = response
            .split_once("\r\n\r\n")
            .context("the answer has no head")?;
        let status = head.split_whitespace().nth(1).unwrap_or_default();
        if status != "200" {
            bail!("GET {path}: {status} {body}");
        }
        let micros: u64 = head
            .lines()
            .find_map(|line| {
                line.to_ascii_lowercase()
                    .strip_prefix("server-timing: app;dur=")
                    .and_then(|micros| micros.trim().parse().ok())
            })
            .context("the answer has no server timing")?;
        let json = serde_json::from_str(body).with_context(|| format!("GET {path}: not JSON"))?;
        Ok((json, Duration::from_micros(micros)))
    }

    /// The server time of `path`, and the rows it answered.
    async fn server_time(&self, path: &str) -> anyhow::Result<(Duration, usize)> {
        let (json, elapsed) = self.get(path).await?;
        Ok((elapsed, answered_rows(&json)))
    }
}

/// Points of every series, items of a list, keys of the catalogue, else one (a detail).
fn answered_rows(json: &Value) -> usize {
    if let Some(series) = json.get("series").and_then(Value::as_array) {
        series
            .iter()
            .map(|line| line["points"].as_array().map_or(0, Vec::len))
            .sum()
    } else if let Some(items) = json.get("items").and_then(Value::as_array) {
        items.len()
    } else if let Some(metrics) = json.get("metrics").and_then(Value::as_array) {
        metrics.len()
    } else {
        1
    }
}

/// Runs `case`'s hand-written SQL in a transaction of the same scope the API's read runs in;
/// returns its rows.
async fn hand_written(database: &Database, scope: &Scope, case: &Case) -> anyhow::Result<usize> {
    let mut tx = TenantTx::begin(&database.app, scope.clone()).await?;
    let rows = bench_support::fetch_hand_written(&mut tx, &case.sql, &case.binds).await?;
    tx.commit().await?;
    Ok(rows)
}

/// A series request of the benchmark.
#[derive(Debug, Clone)]
struct SeriesCase {
    key: &'static str,
    range: time::Duration,
    step: &'static str,
    agg: &'static str,
    group_by: Option<&'static str>,
    /// `site` or `device`, and its id.
    filter: Option<(&'static str, String)>,
}

impl SeriesCase {
    fn name(&self) -> String {
        let range = match self.range.whole_days() {
            0 => "hour",
            1 => "day",
            7 => "week",
            _ => "month",
        };
        let mut name = format!(
            "series {} {} over a {range} {}",
            self.key, self.step, self.agg
        );
        if let Some(group_by) = self.group_by {
            name.push_str(&format!(" by {group_by}"));
        }
        if let Some((what, _)) = &self.filter {
            name.push_str(&format!(" of a {what}"));
        }
        name
    }

    fn path(&self, end: OffsetDateTime) -> anyhow::Result<String> {
        let from = (end - self.range).format(&Rfc3339)?;
        let to = end.format(&Rfc3339)?;
        let mut path = format!(
            "/api/v1/analytics/series?key={}&from={from}&to={to}&step={}&agg={}",
            self.key, self.step, self.agg
        );
        if let Some(group_by) = self.group_by {
            path.push_str(&format!("&group_by={group_by}&limit=10"));
        }
        if let Some((what, id)) = &self.filter {
            path.push_str(&format!("&{what}={id}"));
        }
        Ok(path.replace('+', "%2B"))
    }

    /// The same question as one would write it by hand: the table of the step, the key and
    /// range on its index, the aggregation; the top ten groups by it first when grouped. Sums
    /// and averages add the exact sums, as the API does, so that both give the same answer.
    fn sql(&self, end: OffsetDateTime) -> (String, Vec<Bind>) {
        let (table, time) = match self.step {
            "1m" | "5m" => ("analytics.metrics_min", "minute"),
            _ => ("analytics.metrics_hour", "hour"),
        };
        let seconds = match self.step {
            "1m" => 60.0,
            "5m" => 300.0,
            "1h" => 3600.0,
            _ => 86400.0,
        };
        let value = match self.agg {
            "avg" => {
                "sum(coalesce(value_sum_exact, value_sum::text::numeric))::float8 \
                 / sum(value_count)"
            }
            "min" => "min(value_min)",
            "max" => "max(value_max)",
            "sum" => "sum(coalesce(value_sum_exact, value_sum::text::numeric))::float8",
            "count" => "sum(value_count)::float8",
            _ => "(array_agg(last_value order by last_measured_at desc, last_pos_lsn desc))[1]",
        };
        let bucket = format!(
            "date_bin(make_interval(secs => $5), {time}, timestamptz '2000-01-01 00:00:00+00')"
        );
        let range =
            format!("m.tenant_id = $1 and m.metric_key = $2 and m.{time} >= $3 and m.{time} < $4");
        let mut binds = vec![
            Bind::Text(self.key.into()),
            Bind::Time(end - self.range),
            Bind::Time(end),
            Bind::Float(seconds),
        ];
        let entity = if self.key == "energy_kwh" {
            "session"
        } else {
            "device"
        };
        let sql = match (self.group_by, &self.filter) {
            (None, None) => format!(
                "select {bucket} as bucket, {value} as value, sum(value_count) as count \
                 from {table} m where {range} group by bucket order by bucket"
            ),
            (None, Some(("device", id))) => {
                binds.push(Bind::Text(id.clone()));
                format!(
                    "select {bucket} as bucket, {value} as value, sum(value_count) as count \
                     from {table} m where {range} and m.entity_kind = 'device' \
                         and m.entity_id = $6 \
                     group by bucket order by bucket"
                )
            }
            (None, Some((_, id))) => {
                binds.push(Bind::Text(id.clone()));
                format!(
                    "select {bucket} as bucket, {value} as value, sum(value_count) as count \
                     from {table} m join analytics.devices d on d.tenant_id = m.tenant_id \
                         and d.device_id = m.entity_id \
                     where {range} and m.entity_kind = 'device' and d.site_id = $6 \
                     group by bucket order by bucket"
                )
            }
            (Some(group_by), _) => {
                let attributed = match (group_by, entity) {
                    ("device", "device") => format!(
                        "select m.entity_id as grp, m.* from {table} m \
                         where {range} and m.entity_kind = 'device'"
                    ),
                    ("device", _) => format!(
                        "select s.device_id as grp, m.* from {table} m \
                         join analytics.sessions s on s.tenant_id = m.tenant_id \
                             and s.session_id = m.entity_id \
                         where {range} and m.entity_kind = 'session'"
                    ),
                    (_, _) => format!(
                        "select d.site_id as grp, m.* from {table} m \
                         join analytics.devices d on d.tenant_id = m.tenant_id \
                             and d.device_id = m.entity_id \
                         where {range} and m.entity_kind = 'device'"
                    ),
                };
                let (labels, label_id) = if group_by == "device" {
                    ("analytics.devices", "device_id")
                } else {
                    ("analytics.sites", "site_id")
                };
                format!(
                    "with attributed as ({attributed}), \
                     top as (select grp, {value} as score from attributed \
                         where grp is not null group by grp \
                         order by score desc, grp limit 10) \
                     select t.grp, l.name, {bucket} as bucket, {value} as value, \
                         sum(value_count) as count \
                     from attributed a join top t on t.grp = a.grp \
                     left join {labels} l on l.tenant_id = $1 and l.{label_id} = t.grp \
                     group by t.grp, t.score, l.name, bucket \
                     order by t.score desc, t.grp, bucket"
                )
            }
        };
        (sql, binds)
    }
}

/// A list's or a detail's typed columns and extras, as one would select them by hand.
macro_rules! with_extras {
    ($kind:literal, $alias:literal, $id:literal) => {
        concat!(
            "(select jsonb_object_agg(key, value) from ( \
                 select key, to_jsonb(value) as value from analytics.extras_text x \
                 where x.tenant_id = $1 and x.entity_kind = '",
            $kind,
            "' and x.entity_id = ",
            $alias,
            ".",
            $id,
            " union all select key, to_jsonb(value) from analytics.extras_num x \
                 where x.tenant_id = $1 and x.entity_kind = '",
            $kind,
            "' and x.entity_id = ",
            $alias,
            ".",
            $id,
            " union all select key, to_jsonb(value) from analytics.extras_bool x \
                 where x.tenant_id = $1 and x.entity_kind = '",
            $kind,
            "' and x.entity_id = ",
            $alias,
            ".",
            $id,
            " union all select key, to_jsonb(value) from analytics.extras_time x \
                 where x.tenant_id = $1 and x.entity_kind = '",
            $kind,
            "' and x.entity_id = ",
            $alias,
            ".",
            $id,
            ") e) as extras"
        )
    };
}

const DEVICE_COLUMNS: &str = concat!(
    "select d.device_id, d.source_id, d.updated_at, jsonb_build_object('site_id', d.site_id, \
         'name', d.name, 'kind', d.kind, 'model', d.model, 'status', d.status, \
         'firmware', d.firmware, 'last_seen_at', d.last_seen_at) as columns, ",
    with_extras!("device", "d", "device_id"),
    " from analytics.devices d where d.tenant_id = $1 and d.deleted_at is null"
);
const SITE_COLUMNS: &str = concat!(
    "select s.site_id, s.source_id, s.updated_at, jsonb_build_object('name', s.name, \
         'region', s.region, 'timezone', s.timezone, 'latitude', s.latitude, \
         'longitude', s.longitude) as columns, ",
    with_extras!("site", "s", "site_id"),
    " from analytics.sites s where s.tenant_id = $1 and s.deleted_at is null"
);
const SESSION_COLUMNS: &str = concat!(
    "select s.session_id, s.source_id, s.updated_at, jsonb_build_object('device_id', \
         s.device_id, 'site_id', s.site_id, 'status', s.status, 'started_at', s.started_at, \
         'ended_at', s.ended_at) as columns, ",
    with_extras!("session", "s", "session_id"),
    " from analytics.sessions s where s.tenant_id = $1 and s.deleted_at is null"
);

/// Every query of the benchmark. The later pages start after the 500th row of their order (the
/// 5th on a small run), whose cursor (and last row) the API gives.
async fn cases(client: &Client, shape: &DashboardShape) -> anyhow::Result<Vec<Case>> {
    let end = shape.end;
    let (hour, day, week, month) = (
        time::Duration::hours(1),
        time::Duration::days(1),
        time::Duration::days(7),
        time::Duration::days(30),
    );
    let site = DashboardShape::site_id(2);
    let device = DashboardShape::device_id(3);
    let session = DashboardShape::session_id(shape.sessions / 2);
    let series = |key, range, step, agg| SeriesCase {
        key,
        range,
        step,
        agg,
        group_by: None,
        filter: None,
    };
    let mut series_cases = vec![
        series("power_kw", hour, "1m", "avg"),
        series("power_kw", day, "1m", "avg"),
        series("power_kw", day, "5m", "avg"),
        series("power_kw", week, "5m", "avg"),
        series("power_kw", day, "1h", "avg"),
    ];
    for agg in ["avg", "min", "max", "sum", "count", "last"] {
        series_cases.push(series("power_kw", week, "1h", agg));
    }
    series_cases.extend([
        series("power_kw", month, "1h", "avg"),
        series("power_kw", week, "1d", "avg"),
        series("power_kw", month, "1d", "avg"),
        SeriesCase {
            group_by: Some("site"),
            ..series("power_kw", week, "1h", "avg")
        },
        SeriesCase {
            group_by: Some("device"),
            ..series("power_kw", week, "1h", "max")
        },
        SeriesCase {
            group_by: Some("site"),
            ..series("power_kw", day, "5m", "avg")
        },
        SeriesCase {
            group_by: Some("device"),
            ..series("energy_kwh", week, "1h", "sum")
        },
        SeriesCase {
            filter: Some(("site", site.clone())),
            ..series("power_kw", week, "1h", "avg")
        },
        SeriesCase {
            filter: Some(("device", device.clone())),
            ..series("power_kw", day, "1m", "avg")
        },
        SeriesCase {
            filter: Some(("device", device.clone())),
            ..series("power_kw", month, "1h", "max")
        },
    ]);
    let mut cases = Vec::new();
    for case in series_cases {
        let (sql, binds) = case.sql(end);
        cases.push(Case {
            name: case.name(),
            path: case.path(end)?,
            sql,
            binds,
        });
    }

    let list = |name: &str, path: &str, sql: String, binds: Vec<Bind>| Case {
        name: name.to_owned(),
        path: path.to_owned(),
        sql,
        binds,
    };
    // The `depth`th row of an order, from the API: its cursor and what the SQL starts after.
    let after = async |path: &str, depth: i64| -> anyhow::Result<(String, Value)> {
        let (json, _) = client.get(&format!("{path}&limit={depth}")).await?;
        let cursor = json["next_cursor"]
            .as_str()
            .with_context(|| format!("{path}: {depth} rows or fewer, no later page"))?
            .to_owned();
        let last = json["items"]
            .as_array()
            .and_then(|items| items.last())
            .cloned()
            .unwrap_or_default();
        Ok((cursor, last))
    };
    let text = |value: &Value| Bind::Text(value.as_str().unwrap_or_default().to_owned());

    cases.push(list(
        "devices, first page by id",
        "/api/v1/analytics/devices?limit=50",
        format!("{DEVICE_COLUMNS} order by d.device_id limit 50"),
        vec![],
    ));
    let depth = |rows: i64| if rows > 600 { 500 } else { 5 };
    let (cursor, last) = after("/api/v1/analytics/devices?sort=id", depth(shape.devices)).await?;
    cases.push(list(
        &format!("devices, page after {} by id", depth(shape.devices)),
        &format!("/api/v1/analytics/devices?sort=id&limit=50&cursor={cursor}"),
        format!("{DEVICE_COLUMNS} and d.device_id > $2 order by d.device_id limit 50"),
        vec![text(&last["id"])],
    ));
    cases.push(list(
        "devices of a site and status by name",
        &format!("/api/v1/analytics/devices?site={site}&status=online&sort=name&limit=50"),
        format!(
            "{DEVICE_COLUMNS} and d.site_id = $2 and d.status = 'online' \
             order by lower(d.name), d.device_id limit 50"
        ),
        vec![Bind::Text(site.clone())],
    ));
    cases.push(list(
        "devices, first page by recent, desc",
        "/api/v1/analytics/devices?sort=recent&order=desc&limit=50",
        format!(
            "{DEVICE_COLUMNS} order by d.last_seen_at desc nulls last, d.device_id desc limit 50"
        ),
        vec![],
    ));
    cases.push(list(
        "devices, search",
        "/api/v1/analytics/devices?q=0001&limit=50",
        format!(
            "{DEVICE_COLUMNS} and (d.device_id ilike '%0001%' or d.name ilike '%0001%') \
             order by d.device_id limit 50"
        ),
        vec![],
    ));
    cases.push(list(
        "sites, first page by name",
        "/api/v1/analytics/sites?sort=name&limit=50",
        format!("{SITE_COLUMNS} order by lower(s.name), s.site_id limit 50"),
        vec![],
    ));
    cases.push(list(
        "sessions, first page by id",
        "/api/v1/analytics/sessions?limit=50",
        format!("{SESSION_COLUMNS} order by s.session_id limit 50"),
        vec![],
    ));
    let (cursor, last) = after("/api/v1/analytics/sessions?sort=id", depth(shape.sessions)).await?;
    cases.push(list(
        &format!("sessions, page after {} by id", depth(shape.sessions)),
        &format!("/api/v1/analytics/sessions?sort=id&limit=50&cursor={cursor}"),
        format!("{SESSION_COLUMNS} and s.session_id > $2 order by s.session_id limit 50"),
        vec![text(&last["id"])],
    ));
    cases.push(list(
        "sessions, first page by recent, desc",
        "/api/v1/analytics/sessions?sort=recent&order=desc&limit=50",
        format!(
            "{SESSION_COLUMNS} order by s.started_at desc nulls last, s.session_id desc limit 50"
        ),
        vec![],
    ));
    let (cursor, last) = after(
        "/api/v1/analytics/sessions?sort=recent&order=desc",
        depth(shape.sessions),
    )
    .await?;
    let started_at = last["columns"]["started_at"]
        .as_str()
        .and_then(|text| OffsetDateTime::parse(text, &Rfc3339).ok())
        .context("a session without a start")?;
    cases.push(list(
        &format!(
            "sessions, page after {} by recent, desc",
            depth(shape.sessions)
        ),
        &format!("/api/v1/analytics/sessions?sort=recent&order=desc&limit=50&cursor={cursor}"),
        format!(
            "{SESSION_COLUMNS} and (s.started_at, s.session_id) < ($2, $3) \
             order by s.started_at desc nulls last, s.session_id desc limit 50"
        ),
        vec![Bind::Time(started_at), text(&last["id"])],
    ));
    cases.push(list(
        "sessions of a device",
        &format!("/api/v1/analytics/sessions?device={device}&limit=50"),
        format!("{SESSION_COLUMNS} and s.device_id = $2 order by s.session_id limit 50"),
        vec![Bind::Text(device.clone())],
    ));
    cases.push(list(
        "sessions of a site and status",
        &format!("/api/v1/analytics/sessions?site={site}&status=completed&limit=50"),
        format!(
            "{SESSION_COLUMNS} and s.site_id = $2 and s.status = 'completed' \
             order by s.session_id limit 50"
        ),
        vec![Bind::Text(site.clone())],
    ));
    cases.push(list(
        "site detail",
        &format!("/api/v1/analytics/sites/{site}"),
        format!("{SITE_COLUMNS} and s.site_id = $2"),
        vec![Bind::Text(site.clone())],
    ));
    cases.push(list(
        "device detail",
        &format!("/api/v1/analytics/devices/{device}"),
        format!("{DEVICE_COLUMNS} and d.device_id = $2"),
        vec![Bind::Text(device.clone())],
    ));
    cases.push(list(
        "session detail",
        &format!("/api/v1/analytics/sessions/{session}"),
        format!("{SESSION_COLUMNS} and s.session_id = $2"),
        vec![Bind::Text(session.clone())],
    ));
    cases.push(list(
        "metric keys",
        "/api/v1/analytics/keys",
        "select metric_key, min(hour), max(hour), sum(value_count), \
             count(distinct (entity_kind, entity_id)) \
         from analytics.metrics_hour where tenant_id = $1 group by metric_key \
         order by metric_key"
            .into(),
        vec![],
    ));
    Ok(cases)
}

/// Asks the API once for `week` while watching `pg_stat_user_tables`: the scans of the hourly
/// rollup and of the minutes in between (counts reach the statistics within about a second of
/// a connection going idle, so it waits for them to settle before and after). Then the plan of
/// the read layer's statement for the same query.
async fn prove_rollup(
    database: &Database,
    connection: &ConnectionSettings,
    client: &Client,
    scope: &Scope,
    week: &SeriesCase,
    end: OffsetDateTime,
) -> anyhow::Result<RollupProof> {
    let before = settled_scans(connection).await?;
    client.get(&week.path(end)?).await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let after = loop {
        let after = settled_scans(connection).await?;
        if after.1.total() > before.1.total() || Instant::now() > deadline {
            break after;
        }
    };
    let delta = |after: TableScans, before: TableScans| TableScans {
        seq_scan: after.seq_scan - before.seq_scan,
        idx_scan: after.idx_scan - before.idx_scan,
    };
    let query = store::analytics::SeriesQuery {
        key: week.key.into(),
        from: end - week.range,
        to: end,
        step: store::analytics::Step::Hour,
        aggregation: store::analytics::Aggregation::Avg,
        site: None,
        device: None,
        group_by: None,
        limit: 10,
    };
    let mut tx = TenantTx::begin(&database.app, scope.clone()).await?;
    let plan = bench_support::explain_series(&mut tx, &query).await?;
    tx.rollback().await?;
    let plan_relations = plan;
    Ok(RollupProof {
        hour_scans: delta(after.1, before.1),
        minute_scans: delta(after.0, before.0),
        plan_relations,
    })
}

/// The scans of the minutes and of the hours once two readings 1.2 s apart agree (a
/// connection that could not flush its counts at once retries within ten seconds; the caller
/// reads before anything else ran through the server, and after, until the hours' count moved).
async fn settled_scans(
    connection: &ConnectionSettings,
) -> anyhow::Result<(TableScans, TableScans)> {
    let mut last = bench_support::rollup_scans(connection).await?;
    loop {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let now = bench_support::rollup_scans(connection).await?;
        if now == last {
            return Ok(now);
        }
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_small_run_measures_every_query_and_proves_the_rollup() {
        let test_database = test_support::TestDatabase::new().await;
        let database = test_database.connect().await;
        let args = DashboardArgs {
            events: 60_000,
            tenants: 2,
            samples: 2,
        };
        let report = run(&args, &database, test_database.settings())
            .await
            .unwrap();
        assert_eq!(report.measured.len(), 37, "{report:#?}");
        for measured in &report.measured {
            assert!(
                measured.api.p50 > 0.0 && measured.sql.p50 > 0.0,
                "{measured:?}"
            );
            assert!(
                measured.api_rows > 0 && measured.api_rows == measured.sql_rows,
                "the API and the SQL disagree: {measured:?}"
            );
        }
        assert!(
            report.rollup.answered_from_rollup(),
            "a week of hours was not answered from the rollup: {:?}",
            report.rollup
        );
        assert_eq!(report.minute_rows, 60_000, "{report:#?}");
    }
}
