-- Indexes for the request-log queries beyond those of 0001 (time; model,
-- provider, key and status each with time): sorting or filtering by
-- latency ("the slowest requests"), and log retention of quarantined
-- records by the time they arrived.
CREATE INDEX request_logs_latency ON request_logs (latency_ms);
CREATE INDEX log_quarantine_received ON log_quarantine (received_at);
