-- Rate limits (shared/identity/rate_limits.py): requests counted per caller and fixed window,
-- shared by every server process. UNLOGGED: a count is worth nothing after a crash (the table
-- comes back empty, which only forgives the current window), and a write to it forces no WAL
-- flush at commit.
CREATE UNLOGGED TABLE rate_limit_hits (
    key          text   NOT NULL,  -- the caller: user:<id>, api_key:<id>, or addr:<client address>
    window_start bigint NOT NULL,  -- the window's first second (Unix time)
    hits         bigint NOT NULL,
    PRIMARY KEY (key, window_start)
);
