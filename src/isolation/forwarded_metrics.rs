//! The worker's retry metrics, shown in the supervisor's registry. A worker reports its metric
//! families when they change; this collector serves them, adding up counters and histograms
//! across worker restarts (a new worker starts from zero), so `hipinfer_gpu_*` series keep
//! counting up for Prometheus whatever happens to the workers.

use std::collections::BTreeMap;

use parking_lot::Mutex;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use serde::{Deserialize, Serialize};

/// One series of a family.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeriesWire {
    pub labels: Vec<(String, String)>,
    /// Counter or gauge value.
    pub value: f64,
    /// Histogram: (upper bound, cumulative count), count and sum.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum: f64,
}

/// A metric family as it crosses the process boundary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FamilyWire {
    pub name: String,
    pub help: String,
    /// `counter`, `gauge` or `histogram`.
    pub kind: String,
    pub series: Vec<SeriesWire>,
}

/// The families of `registry`, for a report.
pub fn snapshot(registry: &prometheus::Registry) -> Vec<FamilyWire> {
    registry
        .gather()
        .iter()
        .filter_map(|family| {
            let kind = match family.get_field_type() {
                MetricType::COUNTER => "counter",
                MetricType::GAUGE => "gauge",
                MetricType::HISTOGRAM => "histogram",
                _ => return None,
            };
            let series = family
                .get_metric()
                .iter()
                .map(|m| {
                    let labels = m
                        .get_label()
                        .iter()
                        .map(|l| (l.name().to_string(), l.value().to_string()))
                        .collect();
                    let h = m.get_histogram();
                    SeriesWire {
                        labels,
                        value: match kind {
                            "counter" => m.get_counter().get_value(),
                            "gauge" => m.get_gauge().get_value(),
                            _ => 0.0,
                        },
                        buckets: h
                            .get_bucket()
                            .iter()
                            .map(|b| (b.upper_bound(), b.cumulative_count()))
                            .collect(),
                        count: h.get_sample_count(),
                        sum: h.get_sample_sum(),
                    }
                })
                .collect();
            Some(FamilyWire {
                name: family.name().to_string(),
                help: family.help().to_string(),
                kind: kind.to_string(),
                series,
            })
        })
        .collect()
}

/// A family (without its series) and its series by labels.
type Families = BTreeMap<String, (FamilyWire, BTreeMap<Vec<(String, String)>, SeriesWire>)>;

#[derive(Debug, Default)]
struct State {
    /// Totals of workers that are gone, by family then series labels.
    retired: Families,
    /// The live worker's latest families.
    current: Vec<FamilyWire>,
}

/// A collector serving the workers' families.
#[derive(Debug, Default)]
pub struct ForwardedMetrics {
    state: Mutex<State>,
}

impl ForwardedMetrics {
    /// The live worker's latest families.
    pub fn update(&self, families: Vec<FamilyWire>) {
        self.state.lock().current = families;
    }

    /// The live worker is gone: its counters and histograms join the retired totals (its
    /// gauges go with it).
    pub fn retire(&self) {
        let mut state = self.state.lock();
        let current = std::mem::take(&mut state.current);
        for family in current {
            if family.kind == "gauge" {
                continue;
            }
            let entry = state.retired.entry(family.name.clone()).or_insert_with(|| {
                (
                    FamilyWire {
                        series: Vec::new(),
                        ..family.clone()
                    },
                    BTreeMap::new(),
                )
            });
            for series in family.series {
                add_into(entry.1.entry(series.labels.clone()).or_default(), &series);
            }
        }
    }

    /// Retired totals plus the live worker's values.
    fn merged(&self) -> Vec<FamilyWire> {
        let state = self.state.lock();
        let mut families: Families = state.retired.clone();
        for family in &state.current {
            let entry = families.entry(family.name.clone()).or_insert_with(|| {
                (
                    FamilyWire {
                        series: Vec::new(),
                        ..family.clone()
                    },
                    BTreeMap::new(),
                )
            });
            for series in &family.series {
                let slot = entry.1.entry(series.labels.clone()).or_default();
                if family.kind == "gauge" {
                    *slot = series.clone();
                } else {
                    add_into(slot, series);
                }
            }
        }
        families
            .into_values()
            .map(|(family, series)| FamilyWire {
                series: series.into_values().collect(),
                ..family
            })
            .collect()
    }
}

/// `total += series` (counter value, histogram buckets, count and sum).
fn add_into(total: &mut SeriesWire, series: &SeriesWire) {
    if total.labels.is_empty() {
        total.labels = series.labels.clone();
    }
    total.value += series.value;
    total.count += series.count;
    total.sum += series.sum;
    if total.buckets.len() != series.buckets.len() {
        total.buckets = series.buckets.iter().map(|&(le, _)| (le, 0)).collect();
    }
    for (t, s) in total.buckets.iter_mut().zip(&series.buckets) {
        t.1 += s.1;
    }
}

fn to_proto(family: &FamilyWire) -> MetricFamily {
    let mut out = MetricFamily::default();
    out.set_name(family.name.clone());
    out.set_help(family.help.clone());
    out.set_field_type(match family.kind.as_str() {
        "counter" => MetricType::COUNTER,
        "gauge" => MetricType::GAUGE,
        _ => MetricType::HISTOGRAM,
    });
    let metrics = family
        .series
        .iter()
        .map(|s| {
            let mut m = proto::Metric::default();
            m.set_label(
                s.labels
                    .iter()
                    .map(|(name, value)| {
                        let mut l = proto::LabelPair::default();
                        l.set_name(name.clone());
                        l.set_value(value.clone());
                        l
                    })
                    .collect(),
            );
            match family.kind.as_str() {
                "counter" => {
                    let mut c = proto::Counter::default();
                    c.set_value(s.value);
                    m.set_counter(c);
                }
                "gauge" => {
                    let mut g = proto::Gauge::default();
                    g.set_value(s.value);
                    m.set_gauge(g);
                }
                _ => {
                    let mut h = proto::Histogram::default();
                    h.set_sample_count(s.count);
                    h.set_sample_sum(s.sum);
                    h.set_bucket(
                        s.buckets
                            .iter()
                            .map(|&(le, n)| {
                                let mut b = proto::Bucket::default();
                                b.set_upper_bound(le);
                                b.set_cumulative_count(n);
                                b
                            })
                            .collect(),
                    );
                    m.set_histogram(h);
                }
            }
            m
        })
        .collect();
    out.set_metric(metrics);
    out
}

impl Collector for ForwardedMetrics {
    /// No fixed descriptors: the families are whatever the worker reports.
    fn desc(&self) -> Vec<&Desc> {
        Vec::new()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.merged()
            .iter()
            .filter(|f| !f.series.is_empty())
            .map(to_proto)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(value: f64) -> Vec<FamilyWire> {
        vec![FamilyWire {
            name: "x_total".into(),
            help: "x".into(),
            kind: "counter".into(),
            series: vec![SeriesWire {
                labels: vec![("op".into(), "launch".into())],
                value,
                ..SeriesWire::default()
            }],
        }]
    }

    #[test]
    fn counters_add_up_across_workers() {
        let forwarded = ForwardedMetrics::default();
        forwarded.update(counter(3.0));
        forwarded.retire();
        forwarded.update(counter(2.0));
        let families = forwarded.collect();
        assert_eq!(families[0].get_metric()[0].get_counter().get_value(), 5.0);
        let registry = prometheus::Registry::new();
        registry.register(Box::new(forwarded)).unwrap();
        assert_eq!(registry.gather().len(), 1);
    }
}
