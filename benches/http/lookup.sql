-- pgbench script: the scans of one barcode drawn at random from the same keys as the wrk run.
\set n random(1, :nkeys)
SELECT s.* FROM imbtrack_http_scans s WHERE s.barcode = (SELECT barcode FROM imbtrack_http_keys WHERE n = :n);
