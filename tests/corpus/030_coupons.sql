CREATE DOMAIN coupon_code AS text
    CHECK (VALUE ~ '^[A-Z0-9]{4,16}$');

CREATE TABLE coupons (
    code         coupon_code PRIMARY KEY,
    percent_off  smallint NOT NULL CHECK (percent_off BETWEEN 1 AND 100),
    valid        daterange NOT NULL,
    max_uses     integer,
    used         integer NOT NULL DEFAULT 0,
    CONSTRAINT coupons_use_limit CHECK (max_uses IS NULL OR used <= max_uses)
);

ALTER TABLE orders ADD COLUMN coupon_code coupon_code REFERENCES coupons (code);
