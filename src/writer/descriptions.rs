//! The writer's metrics and those of its partitions' maintenance.

/// The writer's metrics, its counters published at zero.
pub fn describe_metrics() {
    use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram};

    describe_gauge!(
        "journal_oldest_unwritten_seconds",
        Unit::Seconds,
        "Age of the oldest event the writer is storing and has not stored yet"
    );
    describe_counter!(
        "writer_batches_total",
        "Batches the writer committed to PostgreSQL"
    );
    describe_counter!(
        "writer_rows_total",
        "Rows the writer inserted into interaction_logs"
    );
    describe_counter!(
        "writer_duplicates_total",
        "Events the writer delivered again that PostgreSQL already held (a replay or a retry): skipped"
    );
    describe_histogram!(
        "writer_batch_seconds",
        Unit::Seconds,
        "Time to store one batch in PostgreSQL"
    );
    describe_counter!(
        "writer_retries_total",
        "Failed batch writes the writer retried"
    );
    describe_counter!(
        "writer_failures_total",
        "Batch writes that failed after every quick retry (retried until they land)"
    );
    describe_counter!(
        "events_refused_total",
        "Events PostgreSQL refused for their content, set aside in the journal's quarantine"
    );
    describe_counter!(
        "visitor_events_attributed_total",
        "Stored visitor events the writer attributed to a user after the visitor's identification"
    );
    describe_counter!(
        "writer_guarded_total",
        "Events the writer checked against interaction_log_ids (a client's id, and a time near a partition's bound or none of the client's)"
    );
    describe_counter!(
        "writer_expired_total",
        "Events older than --retention when they reached the writer: not stored"
    );
    describe_gauge!("partitions", "Partitions of interaction_logs");
    describe_counter!(
        "partitions_created_total",
        "Partitions of interaction_logs made (ahead, behind, or on demand for an event)"
    );
    describe_counter!(
        "partitions_dropped_total",
        "Partitions of interaction_logs dropped past --retention"
    );
    describe_counter!(
        "partition_maintenance_failures_total",
        "Rounds of partition maintenance that failed (tried again at the next round)"
    );

    for name in [
        "writer_guarded_total",
        "writer_expired_total",
        "partitions_created_total",
        "partitions_dropped_total",
        "partition_maintenance_failures_total",
        "visitor_events_attributed_total",
        "writer_batches_total",
        "writer_rows_total",
        "writer_duplicates_total",
        "writer_retries_total",
        "writer_failures_total",
        "events_refused_total",
    ] {
        counter!(name).increment(0);
    }
}
