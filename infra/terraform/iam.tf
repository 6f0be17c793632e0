# What a pitrflow worker needs on the repository, and nothing else: list, read, write and
# delete objects (retention), abort multipart uploads, and use the bucket's key.  With
# Object Lock it also sets and reads retention and deletes object versions (so expired
# backups really free space); it never gets s3:BypassGovernanceRetention.
# Attach it to the worker's role (an instance profile, or the IRSA role of the Kubernetes
# service account in infra/k8s/serviceaccount.yaml).
data "aws_iam_policy_document" "worker" {
  statement {
    sid       = "Bucket"
    actions = ["s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketMultipartUploads",
      "s3:ListBucketVersions", "s3:GetBucketVersioning", "s3:GetBucketObjectLockConfiguration"]
    resources = [aws_s3_bucket.backups.arn]
  }
  statement {
    sid = "Objects"
    actions = [
      "s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts", "s3:GetObjectVersion", "s3:DeleteObjectVersion",
      "s3:PutObjectRetention", "s3:GetObjectRetention",
    ]
    resources = ["${aws_s3_bucket.backups.arn}/*"]
  }
  statement {
    sid       = "Key"
    actions   = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"]
    resources = [aws_kms_key.backups.arn]
  }
}

resource "aws_iam_policy" "worker" {
  name        = "pitrflow-worker-${var.bucket_name}"
  description = "pitrflow worker access to s3://${var.bucket_name}"
  policy      = data.aws_iam_policy_document.worker.json
  tags        = var.tags
}
