-- The Linkist NFC platform's schema, as far as the runbook's checks need it.
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
CREATE EXTENSION IF NOT EXISTS amcheck;

CREATE TABLE users (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email       text NOT NULL UNIQUE,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    last_login  timestamptz
);

CREATE TABLE profiles (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users(id),
    slug        text NOT NULL UNIQUE,
    headline    text,
    views       integer NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE nfc_cards (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uid         text NOT NULL UNIQUE,
    profile_id  bigint REFERENCES profiles(id),
    status      text NOT NULL CHECK (status IN ('ordered', 'printed', 'shipped', 'active', 'lost')),
    activated_at timestamptz
);

CREATE TABLE orders (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users(id),
    status      text NOT NULL CHECK (status IN ('pending', 'paid', 'failed', 'shipped', 'refunded')),
    amount_cents integer NOT NULL CHECK (amount_cents >= 0),
    currency    text NOT NULL DEFAULT 'usd',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_user_id_idx ON orders (user_id);

CREATE TABLE payments (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id    bigint NOT NULL REFERENCES orders(id),
    stripe_payment_intent text NOT NULL UNIQUE,
    status      text NOT NULL CHECK (status IN ('succeeded', 'requires_payment_method', 'canceled')),
    decline_code text,
    amount_cents integer NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payments_order_id_idx ON payments (order_id);

CREATE TABLE webhook_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stripe_event_id text NOT NULL UNIQUE,
    type        text NOT NULL,
    payload     jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz
);

-- Logins to the platform (weekly security review: failed logins per account and address).
CREATE TABLE login_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account     text NOT NULL,
    source_addr inet NOT NULL,
    success     boolean NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_events_at_idx ON login_events (at);

-- Profile page views: the platform's largest table. Deliberately without an index on
-- profile_id (which its queries filter on), with an index nobody uses (referrer) and two
-- identical indexes on viewed_at, so that the index advice has something true to find.
CREATE TABLE profile_views (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    profile_id  bigint NOT NULL,
    viewed_at   timestamptz NOT NULL DEFAULT now(),
    referrer    text
) WITH (autovacuum_enabled = false);
CREATE INDEX profile_views_referrer_idx ON profile_views (referrer);
CREATE INDEX profile_views_viewed_at_idx ON profile_views (viewed_at);
CREATE INDEX profile_views_viewed_at_copy_idx ON profile_views (viewed_at);
