//! What `evaluate` prints: a table for the terminal, and a plot of Recall@20 against each
//! rule's weight.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;

use super::replay::{Group, Outcome, Scored};
use crate::event::EventType;

/// The run's figures as a Markdown table, with what the grid found.
pub fn table(outcome: &Outcome) -> String {
    let mut out = String::new();
    let types: Vec<&str> = EventType::ALL
        .iter()
        .map(|t| t.as_str())
        .filter(|t| outcome.points_by_type.get(t).is_some_and(|n| *n > 0))
        .collect();
    let _ = writeln!(
        out,
        "{} events: {} of history, {} evaluated from {}; {} candidates",
        outcome.events,
        outcome.history_events,
        outcome.evaluated_events,
        outcome
            .split_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        outcome.candidates
    );
    let by_type: Vec<String> = types
        .iter()
        .map(|t| format!("{t} {}", outcome.points_by_type[t]))
        .collect();
    let _ = writeln!(
        out,
        "{} points ({}); their targets among the candidates: {:.1}%, already in the recent items: {:.1}%; {:.1} s\n",
        outcome.points,
        by_type.join(", "),
        outcome.targets_in_candidates * 100.0,
        outcome.targets_in_recent_items * 100.0,
        outcome.seconds
    );
    let _ = write!(out, "| variant | Recall@20 | MRR@20 | NDCG@20 |");
    for t in &types {
        let _ = write!(out, " Recall@20 {t} |");
    }
    let _ = write!(out, "\n| --- | --- | --- | --- |");
    for _ in &types {
        let _ = write!(out, " --- |");
    }
    out.push('\n');
    let shown = outcome
        .variants
        .iter()
        .filter(|v| !matches!(v.variant.group, Group::Sweep | Group::Grid));
    for scored in shown {
        row(&mut out, scored, &types);
    }
    let grid: Vec<&Scored> = outcome
        .variants
        .iter()
        .filter(|v| v.variant.group == Group::Grid)
        .collect();
    let configured = outcome
        .variants
        .iter()
        .find(|v| v.variant.group == Group::Configured);
    if let (Some(best), Some(configured)) =
        (grid.iter().rev().copied().max_by(by_quality), configured)
    {
        let better = grid
            .iter()
            .filter(|v| by_quality(v, &configured) == std::cmp::Ordering::Greater)
            .count();
        let _ = writeln!(
            out,
            "\ngrid of {} combinations: the best is {} (Recall@20 {:.4}, MRR@20 {:.4}); the configured weights ({:.4}) come after {} of them",
            grid.len(),
            best.variant.name,
            best.all.recall,
            best.all.mrr,
            configured.all.recall,
            better
        );
        row(&mut out, best, &types);
    }
    out
}

/// Recall@20, then MRR@20.
fn by_quality(a: &&Scored, b: &&Scored) -> std::cmp::Ordering {
    a.all
        .recall
        .total_cmp(&b.all.recall)
        .then(a.all.mrr.total_cmp(&b.all.mrr))
}

fn row(out: &mut String, scored: &Scored, types: &[&str]) {
    let _ = write!(
        out,
        "| {} | {:.4} | {:.4} | {:.4} |",
        scored.variant.name, scored.all.recall, scored.all.mrr, scored.all.ndcg
    );
    for t in types {
        let _ = write!(out, " {:.4} |", scored.by_type[t].recall);
    }
    out.push('\n');
}

/// Where a TrueType font for the plot's text is looked for; `PLOT_FONT` names another.
const FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Recall@20 against each rule's weight, the others as configured, beside the input ranking's
/// and the configured rules' Recall@20; as a PNG.
pub fn plot(outcome: &Outcome, path: &Path) -> anyhow::Result<()> {
    use plotters::prelude::*;

    let font = std::env::var("PLOT_FONT")
        .ok()
        .into_iter()
        .chain(FONTS.iter().map(|f| (*f).to_owned()))
        .find_map(|path| std::fs::read(&path).ok())
        .context("--plot needs a TrueType font for its text: none at the usual places; set PLOT_FONT=/path/to/font.ttf")?;
    plotters::style::register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(font.into_boxed_slice()),
    )
    .map_err(|_| anyhow::anyhow!("the font for the plot is not TrueType"))?;

    let sweeps: Vec<(&str, Vec<(f64, f64)>)> = ["intent_boost", "recent_penalty", "purchased"]
        .into_iter()
        .map(|rule| {
            let points = outcome
                .variants
                .iter()
                .filter(|v| v.variant.swept == Some(rule))
                .filter_map(|v| {
                    let weight = match rule {
                        "intent_boost" => v.variant.intent_boost,
                        "recent_penalty" => v.variant.recent_penalty,
                        _ => v.variant.purchased,
                    };
                    weight.map(|w| (w, v.all.recall))
                })
                .collect();
            (rule, points)
        })
        .collect();
    let recall = |group: Group| {
        outcome
            .variants
            .iter()
            .find(|v| v.variant.group == group)
            .map_or(0.0, |v| v.all.recall)
    };
    let (input, configured) = (recall(Group::Input), recall(Group::Configured));
    let all: Vec<f64> = sweeps
        .iter()
        .flat_map(|(_, points)| points.iter().map(|(_, r)| *r))
        .chain([input, configured])
        .collect();
    let low = all.iter().copied().fold(f64::INFINITY, f64::min);
    let high = all.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let margin = ((high - low) * 0.1).max(0.005);

    let root = BitMapBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Recall@20 against each rule's weight ({} points)",
                outcome.points
            ),
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..2.0f64, (low - margin)..(high + margin))?;
    chart
        .configure_mesh()
        .x_desc("weight (the other rules as configured)")
        .y_desc("Recall@20")
        .label_style(("sans-serif", 14))
        .draw()?;
    let colours = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
    ];
    for ((name, points), colour) in sweeps.iter().zip(colours) {
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                colour.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, colour.filled())))?;
    }
    let grey = RGBColor(120, 120, 120);
    chart
        .draw_series(LineSeries::new(
            [(0.0, input), (2.0, input)],
            grey.stroke_width(1),
        ))?
        .label("input ranking alone")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey.stroke_width(1)));
    let black = RGBColor(0, 0, 0);
    chart
        .draw_series(LineSeries::new(
            [(0.0, configured), (2.0, configured)],
            black.stroke_width(1),
        ))?
        .label("the configured rules")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], black.stroke_width(1)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(grey)
        .label_font(("sans-serif", 14))
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()
        .with_context(|| format!("could not write {}", path.display()))?;
    Ok(())
}
