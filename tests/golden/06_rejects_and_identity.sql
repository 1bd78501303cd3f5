SELECT (SELECT count(*) FROM rejects) AS rejects, count(DISTINCT identity) AS identities, min(image_id) AS first, max(image_id) AS last FROM faces
