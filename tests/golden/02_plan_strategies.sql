SELECT strategy, count(*) AS n FROM balance_plan GROUP BY strategy ORDER BY strategy
