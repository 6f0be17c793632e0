output "bucket_name" {
  description = "Use as repository.url = \"s3://<bucket_name>/<prefix>\" in the pitrflow config."
  value       = aws_s3_bucket.backups.bucket
}

output "kms_key_arn" {
  description = "The bucket's default encryption key (repository.sse = \"aws:kms\")."
  value       = aws_kms_key.backups.arn
}

output "worker_policy_arn" {
  description = "Attach to the worker's IAM role."
  value       = aws_iam_policy.worker.arn
}
