SELECT strategy, sum(array_length(changed_attributes)) AS changed, sum(CAST(implausible AS INT)) AS implausible FROM doubling_plan GROUP BY strategy ORDER BY strategy
