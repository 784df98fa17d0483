//! `GET /cluster` and `GET /stats?scope=cluster` (fleet mode): rendered from the fleet as the
//! cluster agent last read it, never waiting on Redis.

use serde_json::{Value, json};

use super::Control;
use crate::cluster::{Beat, UserBeat};
use crate::users::stats_json::rfc3339_ms;

fn counts(c: &UserBeat) -> Value {
    json!({ "connections": c.connections, "bytes_in": c.bytes_in, "bytes_out": c.bytes_out })
}

fn instance(beat: &Beat) -> Value {
    json!({
        "started_at": rfc3339_ms(beat.started_at_ms),
        "seen_at": rfc3339_ms(beat.seen_at_ms),
        "connections": beat.totals.connections,
        "bytes_in": beat.totals.bytes_in,
        "bytes_out": beat.totals.bytes_out,
    })
}

fn line(value: &Value) -> String {
    let mut text = value.to_string();
    text.push('\n');
    text
}

impl Control {
    /// `GET /cluster`: this instance, whether Redis answers, and the live instances (by name).
    pub fn cluster_json(&self) -> Option<String> {
        let cluster = self.cluster()?;
        let view = cluster.view();
        let instances: serde_json::Map<String, Value> =
            view.instances.values().map(|b| (b.name.clone(), instance(b))).collect();
        Some(line(&json!({
            "instance": cluster.name(),
            "redis": cluster.address(),
            "reachable": cluster.reachable(),
            "instances": instances,
        })))
    }

    /// `GET /stats?scope=cluster`: every live instance's counters (totals and by user) and
    /// the fleet's totals; `quota_used` is the fleet's usage as this instance knows it.
    pub fn cluster_stats_json(&self) -> Option<String> {
        let cluster = self.cluster()?;
        let view = cluster.view();
        let users = self.data.users();
        let now = crate::engine::unix_ms();
        let instances: serde_json::Map<String, Value> = view
            .instances
            .values()
            .map(|b| {
                let mut value = instance(b);
                let by_user: serde_json::Map<String, Value> =
                    b.users.iter().map(|(n, c)| (n.clone(), counts(c))).collect();
                value["users"] = Value::Object(by_user);
                (b.name.clone(), value)
            })
            .collect();
        let (all, by_user) = view.totals();
        let mut totals = counts(&all);
        let mut fleet_users = serde_json::Map::new();
        for (name, c) in &by_user {
            let mut value = counts(c);
            if let Some(i) = users.names().iter().position(|n| n == name)
                && let Some(quota) = users.all_limits()[i].quota
            {
                let period = crate::users::limits::quota_period(users.all_limits()[i].quota_reset, now);
                value["quota"] = json!(quota);
                value["quota_used"] = json!(users.all_stats()[i].quota_used(period));
            }
            fleet_users.insert(name.clone(), value);
        }
        totals["users"] = Value::Object(fleet_users);
        Some(line(&json!({
            "instance": cluster.name(),
            "reachable": cluster.reachable(),
            "instances": instances,
            "totals": totals,
        })))
    }
}
