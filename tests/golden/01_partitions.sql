SELECT partition, count(*) AS n, avg(CAST(smiling AS DOUBLE)) AS smiling FROM faces GROUP BY partition ORDER BY partition
