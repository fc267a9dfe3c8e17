-- The catalogue the interaction log refers to: users, items and the products that describe items.
CREATE TABLE users (
    id          BIGINT PRIMARY KEY,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE items (
    asin        TEXT PRIMARY KEY,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE products (
    asin          TEXT PRIMARY KEY REFERENCES items(asin),
    title         TEXT,
    main_category TEXT,
    raw_metadata  JSONB
);

-- One place for the enrichment rule: an item's category and brand. Both the request-time catalogue
-- lookup and the background writer read this view, so they can never disagree.
CREATE VIEW item_catalogue AS
SELECT i.asin,
       p.main_category AS category,
       COALESCE(p.raw_metadata->>'brand', p.raw_metadata->>'store') AS brand
FROM items i
LEFT JOIN products p ON p.asin = i.asin;
