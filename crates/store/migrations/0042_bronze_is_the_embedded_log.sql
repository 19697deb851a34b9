-- On the embedded bus, the edge writes each event to bronze in the transaction that acknowledges
-- it, and the bus log keeps only the event's place (its frame names the bronze row instead of
-- carrying the event's bytes): each event's bytes are written once, not once in the log and
-- again by a bronze writer. The bronze writer's consumer group then has nothing left to consume;
-- once it has consumed what was appended before (the platform drains it at start), its
-- checkpoints are deleted so that they no longer hold back the log's pruning or show as lag.
grant delete on pipeline.checkpoints to tributary_service;
