-- Whether the database answers (/readyz).
SELECT 1
