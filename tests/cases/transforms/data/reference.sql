-- Built into reference.db in the cases' temporary project folder by tests/test_transform_cases.py.
CREATE TABLE products (product_code TEXT PRIMARY KEY, commodity TEXT, tick_size REAL, lot_mwh INTEGER);
INSERT INTO products VALUES ('DE-BASE-D', 'EL', 0.01, 24), ('GB-HH', 'EL', 0.05, NULL), ('NBP-DA', 'NG', 0.01, 29);
CREATE VIEW power_products AS SELECT product_code, lot_mwh FROM products WHERE commodity = 'EL';
