# Authorises a payment from alice to the Food category account, then asks for it again.
# Stubs: python -m grpc_tools.protoc -I proto/contracts --python_out=examples/python \
#        --grpc_python_out=examples/python payment.proto
import os
import uuid

import grpc
import payment_pb2
import payment_pb2_grpc

channel = grpc.insecure_channel(os.environ.get("KOPEK_GRPC_ADDR", "127.0.0.1:50051"))
stub = payment_pb2_grpc.PaymentServiceStub(channel)
request = payment_pb2.AuthorizePaymentRequest(
    idempotency_key=f"order-{uuid.uuid4().hex[:8]}", payer_account_id="user:alice:USD",
    payee_account_id="category:Food:USD", amount_cents=1250, currency="USD", description="lunch")
first = stub.AuthorizePayment(request)
again = stub.AuthorizePayment(request)  # a retry: the same payment, status DUPLICATE
print(payment_pb2.PaymentStatus.Name(first.status), first.payment_id)
print(payment_pb2.PaymentStatus.Name(again.status), again.payment_id)
balance = stub.GetAccountBalance(payment_pb2.GetAccountBalanceRequest(account_id="user:alice:USD"))
print("alice available", balance.available_balance_cents, balance.currency)
