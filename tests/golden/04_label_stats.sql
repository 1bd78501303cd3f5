SELECT attribute, abbreviation, positives_before, positives_after, round(irlbl_after, 3) AS irlbl_after FROM balance_label_stats ORDER BY positives_before LIMIT 8
