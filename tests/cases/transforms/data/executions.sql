-- Built into executions.db in the cases' temporary project folder by tests/test_transform_cases.py:
-- internal executions for the reconcile cases (money as text, to keep every digit).
CREATE TABLE executions (order_no TEXT, qty REAL, price TEXT);
INSERT INTO executions VALUES ('07', 10.0, '40.50'), ('8', 5.0, '41.00'), ('10', 1.0, '1.00');
