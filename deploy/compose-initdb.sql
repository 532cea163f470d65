-- The worker's journal gets its own database beside the engine's (compose.yaml).
CREATE DATABASE journal;
