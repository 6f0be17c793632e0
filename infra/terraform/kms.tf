data "aws_caller_identity" "current" {}

# The bucket's own key: backups can be made unreadable to everyone else by key policy,
# and the key rotates yearly.  In a key policy, Resource "*" means this key.
resource "aws_kms_key" "backups" {
  description             = "pitrflow backups in s3://${var.bucket_name}"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  tags                    = var.tags
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        # IAM policies of this account (the worker policy in iam.tf) decide who uses the key.
        Sid       = "AccountIAMPolicies"
        Effect    = "Allow"
        Principal = { AWS = "arn:aws:iam::${data.aws_caller_identity.current.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "KeyAdministrators"
        Effect    = "Allow"
        Principal = { AWS = var.key_admin_arns }
        Action = [
          "kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*",
          "kms:Update*", "kms:Revoke*", "kms:Disable*", "kms:Get*", "kms:Delete*",
          "kms:TagResource", "kms:UntagResource", "kms:ScheduleKeyDeletion",
          "kms:CancelKeyDeletion",
        ]
        Resource = "*"
      },
    ]
  })
}

resource "aws_kms_alias" "backups" {
  name          = "alias/pitrflow-${var.bucket_name}"
  target_key_id = aws_kms_key.backups.key_id
}
