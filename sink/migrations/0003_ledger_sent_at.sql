-- When the outlet's forwarder sent the event to the broker (its Kafka record's
-- timestamp), so a sync lag splits into the store side (recorded_at -> sent_at:
-- the outlet waiting for its link or a CPU; both stamps come from the outlet's
-- clock, so a skewed clock does not distort it) and the centre (sent_at ->
-- applied_at). NULL for rows written before this column existed.
ALTER TABLE ledger ADD COLUMN IF NOT EXISTS sent_at timestamptz;
