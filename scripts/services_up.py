"""Exit 0 when the scale-out run's services answer, else 1 (saying which did not).

    services_up.py        PostgreSQL and Redis, named by DATABASE_URL and REDIS_URL
    services_up.py s3     the S3 server at KYARA_TEST_S3_ENDPOINT_URL (waits up to 20 s for one just started)
"""
import os
import sys
import time


def databases() -> None:
    import psycopg
    import redis

    dsn = os.environ["DATABASE_URL"].replace("postgres://", "postgresql://", 1)
    with psycopg.connect(dsn, connect_timeout=3) as conn:
        conn.execute("SELECT 1")
    redis.Redis.from_url(os.environ["REDIS_URL"], socket_connect_timeout=3).ping()


def s3() -> None:
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=os.environ["KYARA_TEST_S3_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing",
                          config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 0}))
    deadline = time.monotonic() + 20
    while True:
        try:
            client.list_buckets()
            return
        except Exception:  # noqa: BLE001 - not listening yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


try:
    s3() if sys.argv[1:] == ["s3"] else databases()
except Exception as exc:  # noqa: BLE001
    print(f"services not reachable: {exc}", file=sys.stderr)
    sys.exit(1)
