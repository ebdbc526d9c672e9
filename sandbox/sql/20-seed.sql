-- Seed data: enough rows for row counts, amcheck and the data-quality suite to mean something.
INSERT INTO users (email, name, created_at, last_login)
SELECT 'user' || g || '@linkist.example', 'User ' || g,
       now() - (g || ' hours')::interval, now() - ((g % 97) || ' hours')::interval
FROM generate_series(1, 2000) AS g;

INSERT INTO profiles (user_id, slug, headline, views)
SELECT g, 'profile-' || g, 'Headline ' || g, (g * 37) % 1000
FROM generate_series(1, 2000) AS g;

INSERT INTO nfc_cards (uid, profile_id, status, activated_at)
SELECT md5('card' || g), 1 + (g % 2000),
       (ARRAY['ordered', 'printed', 'shipped', 'active', 'lost'])[1 + g % 5],
       CASE WHEN g % 5 = 3 THEN now() - (g || ' minutes')::interval END
FROM generate_series(1, 3000) AS g;

INSERT INTO orders (user_id, status, amount_cents, created_at)
SELECT 1 + (g % 2000), (ARRAY['pending', 'paid', 'paid', 'paid', 'failed', 'shipped'])[1 + g % 6],
       2900 + (g % 5) * 1000, now() - (g || ' minutes')::interval
FROM generate_series(1, 5000) AS g;

INSERT INTO payments (order_id, stripe_payment_intent, status, decline_code, amount_cents)
SELECT o.id, 'pi_seed_' || o.id,
       CASE WHEN o.status = 'failed' THEN 'requires_payment_method' ELSE 'succeeded' END,
       CASE WHEN o.status = 'failed' THEN 'card_declined' END,
       o.amount_cents
FROM orders o WHERE o.status <> 'pending';

INSERT INTO webhook_events (stripe_event_id, type, payload, processed_at)
SELECT 'evt_seed_' || p.id,
       CASE WHEN p.status = 'succeeded' THEN 'payment_intent.succeeded'
            ELSE 'payment_intent.payment_failed' END,
       jsonb_build_object('payment_intent', p.stripe_payment_intent), now()
FROM payments p;

ANALYZE;

-- Logins over the last week: ordinary traffic with a few typos, a credential-stuffing burst
-- from 203.0.113.66 (many accounts) and a password-guessing burst from 198.51.100.23 on one.
INSERT INTO login_events (account, source_addr, success, at)
SELECT 'user' || (1 + g % 300) || '@linkist.example',
       ('10.20.' || (g % 50) || '.' || (1 + g % 200))::inet,
       g % 40 <> 0, now() - (g * 7 || ' minutes')::interval
FROM generate_series(1, 1400) AS g;
INSERT INTO login_events (account, source_addr, success, at)
SELECT 'user' || (1 + g * 13 % 2000) || '@linkist.example', '203.0.113.66', false,
       now() - interval '2 days' + (g || ' seconds')::interval
FROM generate_series(1, 60) AS g;
INSERT INTO login_events (account, source_addr, success, at)
SELECT 'user7@linkist.example', '198.51.100.23', false,
       now() - interval '3 days' + (g * 20 || ' seconds')::interval
FROM generate_series(1, 35) AS g;

-- Profile views: large enough to want an index on profile_id, read sequentially by the
-- platform's "views of a profile" query; a quarter deleted with autovacuum off (dead rows).
INSERT INTO profile_views (profile_id, viewed_at, referrer)
SELECT 1 + g % 2000, now() - (g || ' seconds')::interval,
       CASE WHEN g % 3 > 0 THEN 'https://' || md5(g::text) || '.example/' END
FROM generate_series(1, 120000) AS g;
DELETE FROM profile_views WHERE id % 4 = 0;
ANALYZE profile_views;
DO $$
BEGIN
    FOR i IN 1..20 LOOP
        PERFORM count(*) FROM profile_views WHERE profile_id = i;
    END LOOP;
END $$;

-- Roles and grants for the security review: a reporting role that logs in without a password
-- and never expires, SELECT on profiles and CREATE on schema public granted to everyone.
CREATE ROLE reporting LOGIN;
GRANT SELECT ON profiles TO PUBLIC;
GRANT CREATE ON SCHEMA public TO PUBLIC;

-- Start the statement statistics from here: the seed's own bulk inserts are not the platform's.
SELECT pg_stat_statements_reset();
