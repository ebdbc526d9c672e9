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
